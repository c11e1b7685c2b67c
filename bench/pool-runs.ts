/**
 * Pools the rounds of several overhead runs of the same code (their bench/results JSON files) into
 * one paired estimate of `agent` vs the same nginx `idle`: per round, the agent's throughput loss
 * and p99 shift against the idle rounds it alternated with; median and distribution-free 95 %
 * interval over all rounds. One saturated run of 16 rounds on this VM gives intervals of ±2-4 %;
 * pooling runs narrows them without a longer single run (which the machine's drift would widen).
 * Pool only runs of the same code and settings: the script refuses files whose settings differ.
 *
 *   node dist/bench/pool-runs.js bench/results/overhead-A.json bench/results/overhead-B.json ...
 */
import * as fs from "fs";
import { median, medianCI95 } from "./stats";

interface Row {
  path: string;
  config: string;
  rps_rounds: number[];
  p99_rounds: number[];
}

function main(files: string[]): void {
  if (files.length === 0) throw new Error("usage: node dist/bench/pool-runs.js <overhead result JSON>...");
  const runs = files.map((f) => JSON.parse(fs.readFileSync(f, "utf8")) as { settings: Record<string, unknown>; overhead: Row[] });
  const key = (s: Record<string, unknown>) => JSON.stringify({ ...s, rounds: undefined });
  const first = key(runs[0].settings);
  runs.forEach((r, i) => {
    if (key(r.settings) !== first) throw new Error(`${files[i]}: settings differ from ${files[0]} (${key(r.settings)} vs ${first})`);
  });
  const paths = [...new Set(runs[0].overhead.map((r) => r.path))];
  console.log(`pooled: ${files.length} runs, agent vs the same nginx idle, paired by round`);
  for (const p of paths) {
    const loss: number[] = [];
    const dp99: number[] = [];
    for (const r of runs) {
      const a = r.overhead.find((x) => x.path === p && x.config === "agent");
      const i = r.overhead.find((x) => x.path === p && x.config === "idle");
      if (!a || !i) throw new Error(`path ${p}: a run without agent and idle rows`);
      a.rps_rounds.forEach((v, j) => loss.push(100 * (1 - v / i.rps_rounds[j])));
      a.p99_rounds.forEach((v, j) => dp99.push(v - i.p99_rounds[j]));
    }
    const [l0, l1] = medianCI95(loss);
    const [d0, d1] = medianCI95(dp99);
    const verdict =
      (l1 <= 1 ? "throughput PASS" : l0 > 1 ? "throughput MISS" : "throughput UNRESOLVED") +
      ", " +
      (d0 <= 0 && d1 >= 0 ? "p99 no measurable change" : "p99 measurably changed");
    console.log(
      `${p.padEnd(6)} ${loss.length} rounds: loss ${median(loss).toFixed(2)} % [${l0.toFixed(2)}, ${l1.toFixed(2)}], ` +
        `p99 ${median(dp99) >= 0 ? "+" : ""}${median(dp99).toFixed(3)} ms [${d0.toFixed(3)}, ${d1.toFixed(3)}]: ${verdict}`,
    );
  }
}

try {
  main(process.argv.slice(2));
} catch (e) {
  console.error(String((e as Error).message ?? e));
  process.exit(1);
}
