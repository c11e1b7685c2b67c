/**
 * Test fixtures that need building (native code). ensureFixture() builds the
 * leak fixture module on first use (scripts/build-fixture.sh skips the build
 * when it is up to date) and returns the load_module line for NginxOptions.main.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { ROOT } from "../../scripts/config";
import type { Nginx } from "./nginx";
import { PLATFORM } from "./platform";

/** built against the selected platform's sources (scripts/build-fixture.sh reads MEMDIAG_PLATFORM) */
export const LEAKY_SO = path.join(
  ROOT,
  "test/fixtures/leaky_upstream/build",
  PLATFORM.name === "debian" ? "" : PLATFORM.name,
  "ngx_http_leaky_upstream_module.so",
);
export const LEAKY_TABLE_SIZE = 300 * 1024;
export const LEAKY_POOL_SIZE = 16 * 1024;

/** Builds the leaky_upstream fixture if needed; returns its .so path. Throws with the build's stderr. */
export function ensureFixture(): string {
  try {
    execFileSync("bash", [path.join(ROOT, "scripts/build-fixture.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 300000,
      env: { ...process.env, MEMDIAG_PLATFORM: PLATFORM.name },
    });
  } catch (e: any) {
    throw new Error(`building the leak fixture failed:\n${e.stderr ?? e.message}`);
  }
  if (!fs.existsSync(LEAKY_SO)) throw new Error(`fixture not found after build: ${LEAKY_SO}`);
  return LEAKY_SO;
}

/** `load_module` line for the leak fixture (builds it first). */
export function leakyLoadModule(): string {
  return `load_module ${ensureFixture()};`;
}

/** Locations serving the fixture: /leaky/update[?n=N], /leaky/status, /leaky/reset (+ per-mode update overrides). */
export const LEAKY_LOCATIONS = `
    location = /leaky/update { leaky_upstream_update; }
    location = /leaky/update-leak { leaky_upstream_update leak; }
    location = /leaky/update-correct { leaky_upstream_update correct; }
    location = /leaky/status { leaky_upstream_status; }
    location = /leaky/reset { leaky_upstream_reset; }
`;

export const SAMPLER_SO = path.join(ROOT, "build/native/libmemdiag_sampler.so");

/** Builds build/native/libmemdiag_sampler.so if needed (scripts/build-native.sh; normally part of `npm run build`). */
export function ensureSampler(): string {
  try {
    execFileSync("bash", [path.join(ROOT, "scripts/build-native.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 120000 });
  } catch (e: any) {
    throw new Error(`building the sampler failed:\n${e.stderr ?? e.message}`);
  }
  if (!fs.existsSync(SAMPLER_SO)) throw new Error(`sampler not found after build: ${SAMPLER_SO}`);
  return SAMPLER_SO;
}

/** Reads `n` 8-byte words of another process's memory through /proc/<pid>/mem (the test's own view, not the agent's). */
export function readWords(pid: number, addrs: number[]): number[] {
  const fd = fs.openSync(`/proc/${pid}/mem`, "r");
  try {
    const buf = Buffer.alloc(8);
    return addrs.map((a) => {
      if (fs.readSync(fd, buf, 0, 8, a) !== 8) throw new Error(`short read at 0x${a.toString(16)}`);
      return Number(buf.readBigUInt64LE(0));
    });
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * GOT scans (from ?sampler=got) before arming and after disarming agree: every slot holds its
 * value from before, except a lazily bound slot (never rewritten by the sampler: it did not hold
 * the real function) that the dynamic linker resolved to the real function in between.
 * Returns the slots that differ otherwise (empty = restored exactly).
 */
export function gotDifferences(before: any[], after: any[]): string[] {
  const b = new Map(before.map((e) => [e.slot, e]));
  const out: string[] = [];
  for (const e of after) {
    const x = b.get(e.slot);
    if (!x) continue; // an object loaded in between
    if (x.value === e.value) continue;
    if (x.value !== x.real && e.value === e.real) continue; // lazy binding resolved by ld.so
    out.push(`${e.object} ${e.fn} @${e.slot}: ${x.value} -> ${e.value}`);
  }
  for (const x of before) if (!after.some((e) => e.slot === x.slot)) out.push(`${x.object} ${x.fn} @${x.slot}: gone`);
  return out;
}

/** /_memdiag?sampler=<q> of one nginx, parsed; any other status than `status` throws with the body. */
export async function samplerCall(ngx: Nginx, q: string, status = 200): Promise<any> {
  const r = await ngx.memdiag(`?sampler=${q}`);
  if (r.status !== status) throw new Error(`?sampler=${q}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
}
