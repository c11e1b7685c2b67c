/**
 * `memdiag <command>`: the subcommand table. bin/memdiag calls main().
 * To add a command, add one entry to COMMANDS (load its module lazily so that
 * `memdiag serve` does not pay for the console and vice versa), e.g.
 *   console: { summary: "live terminal view", run: (argv) => require("./console/cli").main(argv) },
 */
import * as fs from "fs";
import * as path from "path";
import { ROOT } from "../../scripts/config";
import { UsageError, defaultDbPath, resolveServeOptions } from "./options";
import { ControlPlane, VERSION } from "./server";
import { REPORT_USAGE } from "./report/usage";

export interface Command {
  summary: string;
  usage?: string;
  /** resolves with the exit code (a server resolves when it stops) */
  run: (argv: string[]) => Promise<number>;
}

const SERVE_USAGE = `memdiag serve [--port N] [--host H] [--db FILE] [--token T] [--config FILE]
              [--max-frame-bytes N] [--static DIR] [--full-resolution-hours H] [--retention-days D]
              [--sync normal|full]
  Each also from the environment (MEMDIAG_PORT, MEMDIAG_HOST, MEMDIAG_DB, MEMDIAG_TOKEN) or
  memdiag.config.json (control_plane.listen, control_plane.db, token); flags win, then env, then file.
  Listens on 127.0.0.1:9146 by default; a non-loopback host needs a token.
  A relative --db is relative to the current directory; without one the database is
  $XDG_STATE_HOME/memdiag/memdiag.db (default ~/.local/state/memdiag/memdiag.db).
  --sync full: fsync every commit (acked snapshots survive power loss, not only a crash of this process).`;

async function serve(argv: string[]): Promise<number> {
  const opts = resolveServeOptions(argv);
  // the state directory is ours to create (private: snapshots show memory contents' shape); a named one is the operator's
  if (opts.db === defaultDbPath()) fs.mkdirSync(path.dirname(opts.db), { recursive: true, mode: 0o700 });
  if (opts.staticDir === undefined) {
    const def = path.join(ROOT, "control-plane", "web");
    for (const d of [path.join(def, "dist"), def]) if (fs.existsSync(path.join(d, "index.html"))) { opts.staticDir = d; break; }
  }
  let cp: ControlPlane;
  try {
    cp = new ControlPlane(opts);
  } catch (e) {
    throw new Error(`cannot use database ${opts.db}: ${(e as Error).message}`);
  }
  // handlers before start: a signal that arrives while it starts (after "listening on" is logged) still stops cleanly
  let requested: string | undefined;
  let onSignal = (sig: string): void => void (requested = requested ?? sig);
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  await cp.start();
  return new Promise<number>((resolve) => {
    let stopping = false;
    onSignal = (sig: string) => {
      if (stopping) return;
      stopping = true;
      cp.log.info(`${sig}: stopping (flushing pending snapshots)`);
      cp.stop().then(() => resolve(0), (e) => {
        cp.log.error(`stop: ${(e as Error).message}`);
        resolve(1);
      });
    };
    if (requested) onSignal(requested);
  });
}

export const COMMANDS: Record<string, Command> = {
  serve: { summary: "run the control plane (agents push to it; API, /metrics, consoles)", usage: SERVE_USAGE, run: serve },
  // [console work] terminal consoles (control-plane/src/console/), loaded lazily
  console: {
    summary: "live terminal view of the control plane (workers, layers, suspects)",
    usage: "memdiag console [--url http://127.0.0.1:9146] [--token T] [--once] [--worker KEY|PID] [--window 10m]\n  keys: up/down worker, w window, d deep scan, r refresh, q quit; --once prints one frame (80 columns)",
    run: (argv) => require("./console/terminal").consoleMain(argv),
  },
  report: {
    summary: "top-down diagnosis of a worker's memory (text, Markdown, self-contained HTML, JSON)",
    usage: REPORT_USAGE,
    run: (argv) => require("./report/cli").reportMain(argv),
  },
  snapshot: {
    summary: "print every worker's latest snapshot from the local nginx (/_memdiag) as a table",
    usage: "memdiag snapshot [--port 9145] [--host 127.0.0.1] [--json] [--pid N] [--fresh]",
    run: (argv) => require("./console/snapshot").snapshotMain(argv),
  },
};

function help(): string {
  const lines = [`memdiag ${VERSION}: zero-downtime memory diagnosis for nginx`, "", "usage: memdiag <command> [options]", ""];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${c.summary}`);
  lines.push("", "memdiag <command> --help for a command's options");
  return lines.join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(help() + "\n");
    return name ? 0 : 2;
  }
  if (name === "--version") {
    process.stdout.write(VERSION + "\n");
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`memdiag: unknown command '${name}'\n\n${help()}\n`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write((cmd.usage ?? `memdiag ${name}: ${cmd.summary}`) + "\n");
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`memdiag ${name}: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`memdiag ${name}: ${(e as Error).message}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
