/** Runs scripts/demo.sh (`npm run demo`) non-interactively, and finds what it left running. */
import { spawn, execFileSync } from "child_process";
import * as path from "path";
import { ROOT } from "../../scripts/config";

const DEMO_DIR = path.join(ROOT, ".tmp", "demo");


export function leftovers(): string[] {
  try {
    return execFileSync("pgrep", ["-af", `${DEMO_DIR}|demo/helpers\\.js`], { encoding: "utf8" }).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

export function runDemo(env: Record<string, string>, onOutput?: (all: string, child: ReturnType<typeof spawn>) => void, args: string[] = []): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn("bash", [path.join(ROOT, "scripts", "demo.sh"), ...args], {
      cwd: ROOT,
      env: { ...process.env, MEMDIAG_DEMO_NO_SETUP: "1", MEMDIAG_DEMO_CP_PORT: "0", NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const add = (d: Buffer): void => {
      out += d.toString();
      onOutput?.(out, child);
    };
    child.stdout.on("data", add);
    child.stderr.on("data", add);
    child.on("exit", (code, signal) => resolve({ code, signal, out }));
  });
}
