/** `memdiag report --help` (its own module: the command table loads it without the report code) */
export const REPORT_USAGE = `memdiag report [--instance I | --worker KEY|PID] [--window 1h | --from T [--to T]]
               [--format text|md|html|json] [--json] [--out FILE]
               [--control-plane http://127.0.0.1:9146] [--token T] [--callpaths fresh|stored]
memdiag report --url http://127.0.0.1:9145 [--interval 60s] [--pid N] [--token T] [--format ...] [--out FILE]
  A top-down diagnosis of one worker: system → allocator → owner → size classes → code path,
  a verdict per step (grew / stable / not enough data) with its figures, and what to do next.
  From stored history (default window 1h, ending at the worker's latest snapshot; --from/--to:
  unix seconds, ISO dates or -10m), on the worker of --instance that grows fastest unless
  --worker is given. With --url: two deep snapshots from /_memdiag, --interval apart (beyond
  loopback a deep scan needs the shared token: --token, MEMDIAG_TOKEN or memdiag.config.json).
  --format html writes one self-contained file (charts and flame graph inline) to attach to a ticket.`;
