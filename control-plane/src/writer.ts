/**
 * Group commit in front of the store: snapshots received in the same event-loop
 * turn are written in one transaction, then each one's `done` runs (the ack goes
 * out from there, so an ack always means "committed"). When the database cannot
 * be written (disk full, read-only), the writer keeps a bounded backlog, reports
 * the error, and retries; it never throws into the caller.
 */
import { NewSnapshot, Store } from "./store";
import { Logger } from "./log";

export interface PendingWrite {
  snap: NewSnapshot;
  /** bytes this item holds in memory (for the backlog bound) */
  bytes: number;
  /** performance.now() when the frame arrived */
  receivedAt: number;
  /** called once after the commit; fresh=false for a resent snapshot that was already stored */
  done: (fresh: boolean) => void;
  /** called once if the item has to wait in the backlog because the store is failing */
  backlogged?: () => void;
  /** set when backlogged() has run */
  notified?: boolean;
}

export interface WriterOptions {
  maxBatch: number;
  backlogMax: number;
  backlogMaxBytes: number;
  retryMs: number;
}

export const DEFAULT_WRITER: WriterOptions = { maxBatch: 1000, backlogMax: 20000, backlogMaxBytes: 256 << 20, retryMs: 2000 };

export interface WriterStatus {
  ok: boolean;
  error?: string;
  error_since?: number;
  backlog: number;
  backlog_bytes: number;
  committed: number;
  failed_commits: number;
  store_latency_ms: { p50: number; p99: number; max: number; samples: number };
}

const LAT_RING = 20000;

export class Writer {
  private queue: PendingWrite[] = [];
  private queuedBytes = 0;
  private scheduled = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private error: string | undefined;
  private errorSince: number | undefined;
  private committed = 0;
  private failed = 0;
  private lat = new Float64Array(LAT_RING);
  private latN = 0;
  private closed = false;

  constructor(private store: Store, private log: Logger, private opts: WriterOptions = DEFAULT_WRITER) {}

  get failing(): boolean {
    return this.error !== undefined;
  }

  /** queue a snapshot; false when the backlog is full (the caller rejects the frame, the agent keeps it) */
  enqueue(p: PendingWrite): boolean {
    if (this.closed) return false;
    if (this.queue.length >= this.opts.backlogMax || this.queuedBytes + p.bytes > this.opts.backlogMaxBytes) return false;
    this.queue.push(p);
    this.queuedBytes += p.bytes;
    if (!this.scheduled && !this.retryTimer) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  /** a snapshot waiting in the backlog (not yet committed) */
  pending(id: number): NewSnapshot | undefined {
    return this.queue.find((p) => p.snap.id === id)?.snap;
  }

  flush(): void {
    this.scheduled = false;
    while (this.queue.length > 0) {
      const batch = this.queue.slice(0, this.opts.maxBatch);
      let fresh: Set<number>;
      try {
        fresh = this.store.insertBatch(batch.map((p) => p.snap));
      } catch (e) {
        this.fail(e as Error);
        return;
      }
      this.queue.splice(0, batch.length);
      for (const p of batch) this.queuedBytes -= p.bytes;
      if (this.error !== undefined) {
        this.log.info(`store: writable again after ${((Date.now() - this.errorSince!) / 1000).toFixed(1)} s; backlog draining`);
        this.error = this.errorSince = undefined;
      }
      const now = performance.now();
      this.committed += fresh.size;
      for (const p of batch) {
        this.lat[this.latN++ % LAT_RING] = now - p.receivedAt;
        try {
          p.done(fresh.has(p.snap.id));
        } catch (e) {
          this.log.error(`writer: done callback failed: ${(e as Error).message}`);
        }
      }
      if (this.closed) continue;
      if (this.queue.length > 0) {
        // let the event loop breathe between large batches
        this.scheduled = true;
        setImmediate(() => this.flush());
        return;
      }
    }
  }

  private fail(e: Error): void {
    this.failed++;
    const msg = `${(e as { code?: string }).code ?? "error"}: ${e.message}`;
    if (this.error !== msg) this.log.error(`store: cannot write ${this.store.file} (${msg}); keeping ${this.queue.length} snapshot(s) in memory and retrying every ${this.opts.retryMs} ms`);
    if (this.error === undefined) this.errorSince = Date.now();
    this.error = msg;
    for (const p of this.queue) {
      if (p.notified || !p.backlogged) continue;
      p.notified = true;
      try {
        p.backlogged();
      } catch (err) {
        this.log.error(`writer: backlog callback failed: ${(err as Error).message}`);
      }
    }
    if (!this.closed && !this.retryTimer) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.flush();
      }, this.opts.retryMs);
      this.retryTimer.unref();
    }
  }

  status(): WriterStatus {
    const n = Math.min(this.latN, LAT_RING);
    const sorted = Array.from(this.lat.subarray(0, n)).sort((a, b) => a - b);
    const q = (f: number): number => (n ? Math.round(sorted[Math.min(n - 1, Math.floor(f * n))] * 100) / 100 : 0);
    return {
      ok: this.error === undefined,
      error: this.error,
      error_since: this.errorSince !== undefined ? this.errorSince / 1000 : undefined,
      backlog: this.queue.length,
      backlog_bytes: this.queuedBytes,
      committed: this.committed,
      failed_commits: this.failed,
      store_latency_ms: { p50: q(0.5), p99: q(0.99), max: n ? Math.round(sorted[n - 1] * 100) / 100 : 0, samples: n },
    };
  }

  resetLatency(): void {
    this.latN = 0;
  }

  /** final flush (shutdown); what cannot be written is lost but was never acked */
  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    try {
      this.flush();
    } catch {
      /* reported by fail() */
    }
  }
}
