/**
 * `memdiag report`: the guided-analysis report, from the control plane's stored
 * history (GET /api/report, rendered here) or, with --url, from two deep snapshots
 * of a local /_memdiag taken --interval apart.
 */
import * as fs from "fs";
import { parseFlags } from "../console/text";
import { ControlPlane } from "../console/client";
import { defaultUrl, safeToken } from "../console/terminal";
import { parseDuration } from "../params";
import { UsageError } from "../options";
import { buildReport } from "./build";
import { Report } from "./model";
import { REPORT_FORMATS, ReportFormat, renderReport } from "./render";
import { LiveSource } from "./live";
import { loadConfig } from "../../../scripts/config";

const FLAGS = {
  instance: "string", worker: "string", window: "string", from: "string", to: "string", format: "string", json: "bool", out: "string",
  "control-plane": "string", token: "string", callpaths: "string", url: "string", interval: "string", pid: "string",
} as const;

const HISTORY_ONLY = ["instance", "worker", "window", "from", "to", "control-plane", "callpaths"];
const LIVE_ONLY = ["interval", "pid"];

function usageCheck(f: Record<string, string | boolean>): { format: ReportFormat } {
  const live = f.url !== undefined;
  for (const k of live ? HISTORY_ONLY : LIVE_ONLY) if (f[k] !== undefined) throw new UsageError(`--${k} ${live ? "is for reports from the control plane's history (without --url)" : "goes with --url (a report from a local /_memdiag)"}`);
  if (f.window !== undefined && f.from !== undefined) throw new UsageError("give --window or --from (with --to), not both");
  if (f.to !== undefined && f.from === undefined) throw new UsageError("--to needs --from");
  if (f.instance !== undefined && f.worker !== undefined) throw new UsageError("give --instance or --worker, not both");
  if (f.json && f.format !== undefined && f.format !== "json") throw new UsageError("--json and --format disagree");
  const format = (f.json ? "json" : (f.format ?? "text")) as ReportFormat;
  if (!REPORT_FORMATS.includes(format)) throw new UsageError(`--format: expected ${REPORT_FORMATS.join(", ")} (got '${f.format}')`);
  if (f.callpaths !== undefined && f.callpaths !== "fresh" && f.callpaths !== "stored") throw new UsageError(`--callpaths: expected fresh or stored (got '${f.callpaths}')`);
  if (f.pid !== undefined && !/^\d+$/.test(String(f.pid))) throw new UsageError(`--pid: expected a process id (got '${f.pid}')`);
  return { format };
}

/** the shared token /_memdiag wants for a deep scan from beyond loopback (memdiag.config.json), "" without one */
function agentToken(): string {
  try {
    const cfg = loadConfig();
    return cfg.agent.token ?? cfg.token ?? "";
  } catch {
    return "";
  }
}

/** a duration flag, as a usage error when malformed */
function duration(v: string, name: string): number {
  try {
    return parseDuration(v, name);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

async function fromHistory(f: Record<string, string | boolean>): Promise<Report> {
  const cp = new ControlPlane(String(f["control-plane"] ?? process.env.MEMDIAG_URL ?? defaultUrl()), String(f.token ?? process.env.MEMDIAG_TOKEN ?? safeToken()));
  const q = new URLSearchParams({ format: "json" });
  for (const k of ["instance", "worker", "window", "from", "to", "callpaths"]) if (f[k] !== undefined) q.set(k, String(f[k]));
  if (f.window !== undefined) duration(String(f.window), "--window");
  return cp.get<Report>(`/api/report?${q}`);
}

export async function reportMain(argv: string[]): Promise<number> {
  let f: Record<string, string | boolean>;
  try {
    f = parseFlags(argv, FLAGS);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { format } = usageCheck(f);
  let report: Report;
  if (f.url !== undefined) {
    const interval = f.interval !== undefined ? duration(String(f.interval), "--interval") : 60;
    try {
      new URL(String(f.url));
    } catch {
      throw new UsageError(`--url: expected http://host:port (got '${f.url}')`);
    }
    const src = new LiveSource({
      url: String(f.url), interval_s: interval, pid: f.pid !== undefined ? Number(f.pid) : undefined, token: String(f.token ?? process.env.MEMDIAG_TOKEN ?? agentToken()),
      log: (l) => process.stderr.write(`memdiag report: ${l}\n`),
    });
    report = buildReport(await src.input());
  } else report = await fromHistory(f);
  const text = renderReport(report, format);
  if (f.out !== undefined) {
    fs.writeFileSync(String(f.out), text);
    process.stderr.write(`memdiag report: ${report.verdict}; ${format} written to ${f.out}\n`);
  } else process.stdout.write(text);
  return 0;
}
