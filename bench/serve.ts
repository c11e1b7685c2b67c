/**
 * The control plane as the benchmarks run it: `memdiag serve` in its own node
 * process on a free loopback port, resolved once it says it is listening.
 */
import { spawn, ChildProcess } from "child_process";
import * as path from "path";
import { freePort } from "../test/harness/ports";
import { ROOT } from "../control-plane/src/config-file";

export async function serveForBench(db: string, config: string, extraArgs: string[] = [], nodeArgs: string[] = []): Promise<{ proc: ChildProcess; base: string }> {
  const port = await freePort();
  const cli = path.join(ROOT, "dist", "control-plane", "src", "cli.js");
  const proc = spawn(process.execPath, [...nodeArgs, cli, "serve", "--port", String(port), "--db", db, "--config", config, ...extraArgs], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  await new Promise<void>((resolve, reject) => {
    proc.stderr!.on("data", (d) => {
      err += d.toString();
      if (err.includes("listening on")) resolve();
    });
    proc.on("exit", (code) => reject(new Error(`control plane exited ${code}: ${err}`)));
  });
  return { proc, base: `127.0.0.1:${port}` };
}
