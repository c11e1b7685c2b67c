/**
 * FlameGraph input (folded stacks) from a worker's `?sampler=top` answer,
 * with frames named on this side where the worker could not (elfsym.ts).
 * One line per call path: "outermost;...;innermost;allocfn weight", weight =
 * estimated live bytes. Feed it to flamegraph.pl / speedscope / inferno.
 */
import { Symbolizer, FrameIn } from "./elfsym";
import { DEFAULT_CONFIG } from "./config-file";

export interface TopPath {
  fn: string;
  est_bytes: number;
  frames: FrameIn[];
}

const clean = (s: string) => s.replace(/[; ]/g, "_");

export function foldedStacks(paths: TopPath[], sym: Symbolizer = new Symbolizer(), withLines = false): string {
  // one addr2line run per file for all paths
  const all = paths.flatMap((p) => p.frames);
  const fl = withLines ? sym.fileLines(all) : [];
  const lines: string[] = [];
  let k = 0;
  for (const p of paths) {
    const names = p.frames.map((f) => {
      const where = fl[k++];
      return clean(sym.label(f) + (where ? ` (${where})` : ""));
    });
    lines.push(`${[...names].reverse().join(";")};${p.fn} ${p.est_bytes}`);
  }
  return lines.length ? lines.join("\n") + "\n" : "";
}

/**
 * Fetches `?sampler=top` from a memdiag endpoint and returns folded stacks:
 *   node dist/control-plane/src/flame.js http://127.0.0.1:9145 [pid] [--lines] > out.folded
 */
export async function fetchFolded(base: string, pid?: number, withLines = false): Promise<string> {
  const q = `sampler=top&sampler_limit=1000${pid ? `&pid=${pid}` : ""}`;
  const r = await fetch(`${base.replace(/\/$/, "")}/_memdiag?${q}`);
  const body: any = await r.json();
  if (!r.ok) throw new Error(`${r.status}: ${body.error ?? JSON.stringify(body)}`);
  return foldedStacks(body.paths, new Symbolizer(), withLines);
}

if (require.main === module) {
  const args = process.argv.slice(2).filter((a) => a !== "--lines");
  const url = args[0] ?? `http://${DEFAULT_CONFIG.listen}`;
  const pid = args[1] ? Number(args[1]) : undefined;
  fetchFolded(url, pid, process.argv.includes("--lines"))
    .then((s) => process.stdout.write(s))
    .catch((e) => {
      console.error(String(e.message ?? e));
      process.exit(1);
    });
}
