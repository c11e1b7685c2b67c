/**
 * Headless Chromium for the web console tests: Debian's /usr/bin/chromium driven by
 * playwright-core, in a throw-away profile, with one page whose uncaught errors are
 * collected. close() ends the browser and removes the profile.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { chromium, BrowserContext, Page } from "playwright-core";

export const CHROMIUM_BIN = process.env.MEMDIAG_CHROMIUM ?? "/usr/bin/chromium";

/** headless, no sandbox (root in CI), and nothing that reaches the network by itself */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface HeadlessPage {
  ctx: BrowserContext;
  page: Page;
  /** messages of the errors the page threw and did not catch, in order */
  pageErrors: string[];
  close(): Promise<void>;
}

export async function openPage(viewport = { width: 1400, height: 1400 }): Promise<HeadlessPage> {
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "memdiag-chromium-"));
  const removeProfile = () => fs.rmSync(userDir, { recursive: true, force: true });
  let ctx: BrowserContext | undefined;
  try {
    ctx = await chromium.launchPersistentContext(userDir, { executablePath: CHROMIUM_BIN, headless: true, viewport, args: CHROMIUM_ARGS });
    const page = await ctx.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    const opened = ctx;
    return {
      ctx: opened,
      page,
      pageErrors,
      close: async () => {
        await opened.close();
        removeProfile();
      },
    };
  } catch (e) {
    await ctx?.close().catch(() => undefined);
    removeProfile();
    throw e;
  }
}
