/**
 * The guided-analysis report: one worker's memory over a window, narrowed down
 * top-down (system → allocator → owner → size-class evidence → code path), a
 * verdict per step with the numbers behind it. Built by build.ts from stored
 * history (source.ts) or from two live snapshots (live.ts); rendered by render.ts.
 * The JSON form (format=json) is this model as is.
 */

export const REPORT_VERSION = 1;

export type StepId = "system" | "allocator" | "owner" | "evidence" | "code";
export type Verdict = "grew" | "stable" | "not enough data";

/** one measured quantity at the window's start and end */
export interface Fact {
  label: string;
  /** bytes unless `unit` says otherwise */
  start?: number;
  now?: number;
  delta?: number;
  /** "count" (pools, chunks), "ratio" (0..1) */
  unit?: "bytes" | "count" | "ratio";
  note?: string;
  /** this row is what the step's verdict is about */
  key?: boolean;
}

export interface ChartSeries {
  label: string;
  /** [unix seconds, value] */
  points: [number, number][];
}

export type Chart =
  | { kind: "lines"; title: string; unit: "bytes"; series: ChartSeries[] }
  | { kind: "bars"; title: string; unit: "count"; labels: string[]; start: number[]; now: number[] }
  | { kind: "flame"; title: string; items: { stack: string[]; value: number }[] };

export interface Step {
  id: StepId;
  title: string;
  verdict: Verdict;
  /** one sentence with the numbers behind the verdict */
  finding: string;
  /** the finding's gist for the summary, when the step grew */
  gist?: string;
  facts: Fact[];
  /** what this step rules out, and why */
  ruled_out: string[];
  chart?: Chart;
}

export interface Report {
  version: number;
  generated_at: number;
  /** "history": stored snapshots over a window; "live": two deep snapshots from /_memdiag */
  mode: "history" | "live";
  worker: { key: string; instance: string; pid: number; host?: string; worker_start?: number };
  window: { from: number; to: number; seconds: number };
  /** how verdicts are judged: a trend over many points, or the difference of two snapshots */
  basis: "trend" | "two snapshots";
  snapshots: number;
  deep_snapshots: number;
  /** overall: the leading step's verdict */
  verdict: "growth" | "no sustained growth" | "not enough data";
  summary: string;
  steps: Step[];
  next: string[];
  /** other workers of the same instance in the window (history mode with --instance) */
  others?: { key: string; pid: number; rss_bytes?: number; rss_delta?: number; top_suspect?: string }[];
}
