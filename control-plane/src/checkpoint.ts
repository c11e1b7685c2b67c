/**
 * WAL checkpoints off the event loop: a worker thread with its own connection
 * runs PRAGMA wal_checkpoint(PASSIVE) every second, so the copy back into the
 * database file and its fsync never stall ingest. The main connection keeps a
 * large automatic checkpoint as a safety net should the thread die.
 */
import { Worker } from "worker_threads";
import { Logger } from "./log";

const CODE = `
const { workerData, parentPort } = require("worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma("busy_timeout = 1000");
const timer = setInterval(() => {
  try { db.pragma("wal_checkpoint(PASSIVE)"); } catch (e) { parentPort.postMessage(String(e && e.message || e)); }
}, workerData.intervalMs);
parentPort.on("message", (m) => { if (m === "stop") { clearInterval(timer); try { db.close(); } catch {} parentPort.close(); } });
`;

export class Checkpointer {
  private worker: Worker | undefined;
  private lastError = "";

  constructor(file: string, log: Logger, intervalMs = 1000) {
    try {
      this.worker = new Worker(CODE, { eval: true, workerData: { file, driver: require.resolve("better-sqlite3"), intervalMs } });
      this.worker.unref();
      this.worker.on("message", (m: string) => {
        if (m !== this.lastError) log.warn(`store: checkpoint: ${m}`);
        this.lastError = m;
      });
      this.worker.on("error", (e) => log.warn(`store: checkpoint thread failed (${e.message}); automatic checkpoints continue`));
    } catch (e) {
      log.warn(`store: no checkpoint thread (${(e as Error).message}); automatic checkpoints only`);
    }
  }

  async stop(): Promise<void> {
    const w = this.worker;
    if (!w) return;
    this.worker = undefined;
    await new Promise<void>((resolve) => {
      w.once("exit", () => resolve());
      w.postMessage("stop");
      setTimeout(() => void w.terminate(), 2000).unref();
    });
  }
}
