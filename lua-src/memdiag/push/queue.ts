/**
 * Bounded ring of snapshots waiting for the control plane's ack. Pure Lua (no
 * ngx): unit-tested with the luajit CLI.
 *
 * - capped by count and by bytes; when a push would exceed either cap the
 *   oldest entries go (sent-but-unacked ones too) and are counted;
 * - an entry leaves only when its ack arrives (ack(seq)), or when the control
 *   plane rejects it (remove(seq));
 * - entries are sent in order: nextUnsent() walks a cursor; resetSent() after a
 *   reconnect rewinds it so every unacked entry goes again;
 * - `dropped` of a frame = entries dropped since the last frame that was sent;
 *   the count is taken when an entry is first sent (takeDropped) and given back
 *   if that entry is itself dropped before it is acked.
 */
export interface Entry {
  seq: number;
  /** snapshot JSON, already trimmed to fit a frame */
  json: string;
  /** bytes charged against the cap */
  bytes: number;
  sent: boolean;
  /** how many times it went out without an ack (poison-frame guard) */
  attempts: number;
  /** when it was last sent (s, ngx.now()) */
  sentAt?: number;
  reply_to?: string;
  /** `dropped` announced with this entry (set when first sent) */
  dropped?: number;
  /** names of lists shortened to fit (for logs) */
  trimmed?: string[];
}

/** bytes charged per entry on top of its JSON (table, envelope) */
export const ENTRY_OVERHEAD = 256;

export class Ring {
  private items = new LuaTable<number, Entry>();
  /** index of the oldest entry; entries live at [head, head + count) */
  private head = 1;
  count = 0;
  bytes = 0;
  /** dropped and not yet announced to the control plane */
  droppedPending = 0;
  /** dropped over the worker's lifetime */
  droppedTotal = 0;

  constructor(public maxCount: number, public maxBytes: number) {
    if (this.maxCount < 1) this.maxCount = 1;
  }

  /** i-th entry from the oldest (0-based) */
  at(i: number): Entry | undefined {
    if (i < 0 || i >= this.count) return undefined;
    return this.items.get(this.head + i);
  }

  /** Adds an entry; returns how many old entries were dropped to make room (the new one counts if it cannot fit at all). */
  push(seq: number, json: string, reply_to?: string, trimmed?: string[]): number {
    const bytes = json.length + ENTRY_OVERHEAD;
    if (bytes > this.maxBytes) {
      this.countDrop(undefined);
      return 1;
    }
    let dropped = 0;
    while (this.count > 0 && (this.count + 1 > this.maxCount || this.bytes + bytes > this.maxBytes)) {
      this.dropOldest();
      dropped++;
    }
    const e: Entry = { seq, json, bytes, sent: false, attempts: 0, reply_to, trimmed };
    this.items.set(this.head + this.count, e);
    this.count++;
    this.bytes += bytes;
    return dropped;
  }

  private countDrop(e: Entry | undefined): void {
    this.droppedPending += 1;
    this.droppedTotal += 1;
    // the frame that announced earlier drops is gone unacked: announce them again
    if (e && e.dropped !== undefined) this.droppedPending += e.dropped;
  }

  dropOldest(): Entry | undefined {
    if (this.count === 0) return undefined;
    const e = this.items.get(this.head)!;
    this.items.delete(this.head);
    this.head++;
    this.count--;
    this.bytes -= e.bytes;
    this.countDrop(e);
    return e;
  }

  /** Removes the entry with `seq` (ack or rejection). Returns it, or undefined when not queued (already dropped). */
  remove(seq: number): Entry | undefined {
    for (let i = 0; i < this.count; i++) {
      const e = this.items.get(this.head + i)!;
      if (e.seq === seq) {
        // shift the newer entries down one slot (the queue is short)
        for (let j = this.head + i; j < this.head + this.count - 1; j++) this.items.set(j, this.items.get(j + 1)!);
        this.items.delete(this.head + this.count - 1);
        this.count--;
        this.bytes -= e.bytes;
        return e;
      }
    }
    return undefined;
  }

  /** Replaces an entry's JSON (trimmed again for a smaller limit), keeping the byte count right. */
  rewrite(e: Entry, json: string, trimmed?: string[]): void {
    const bytes = json.length + ENTRY_OVERHEAD;
    this.bytes += bytes - e.bytes;
    e.bytes = bytes;
    e.json = json;
    e.trimmed = trimmed;
  }

  /** The queued entry with `seq`, if any. */
  find(seq: number): Entry | undefined {
    for (let i = 0; i < this.count; i++) {
      const e = this.items.get(this.head + i)!;
      if (e.seq === seq) return e;
    }
    return undefined;
  }

  /** Acked: stored by the control plane. Entries older than an acked one are left alone (acks are per frame). */
  ack(seq: number): Entry | undefined {
    return this.remove(seq);
  }

  /**
   * The control plane refused the entry (error reply): it knows, so it is not
   * counted as dropped; drops it announced were not stored either and go again.
   */
  reject(seq: number): Entry | undefined {
    const e = this.remove(seq);
    if (e && e.dropped !== undefined) this.droppedPending += e.dropped;
    return e;
  }

  /** Removes an entry that can never be delivered (too large, poison); counted as dropped. */
  discard(seq: number): Entry | undefined {
    const e = this.remove(seq);
    if (e) this.countDrop(e);
    return e;
  }

  /** Oldest entry not sent on the current connection. */
  nextUnsent(): Entry | undefined {
    for (let i = 0; i < this.count; i++) {
      const e = this.items.get(this.head + i)!;
      if (!e.sent) return e;
    }
    return undefined;
  }

  /** The oldest entry sent on the current connection and not acked yet. */
  oldestInflight(): Entry | undefined {
    for (let i = 0; i < this.count; i++) {
      const e = this.items.get(this.head + i)!;
      if (e.sent) return e;
    }
    return undefined;
  }

  /** Entries sent on the current connection and not acked yet. */
  inflight(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (this.items.get(this.head + i)!.sent) n++;
    return n;
  }

  /** Connection lost: everything unacked goes again on the next one. */
  resetSent(): void {
    for (let i = 0; i < this.count; i++) this.items.get(this.head + i)!.sent = false;
  }

  /** The `dropped` value for a frame being sent for the first time. */
  takeDropped(): number {
    const d = this.droppedPending;
    this.droppedPending = 0;
    return d;
  }

  /** seqs from oldest to newest (tests, diagnostics) */
  seqs(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.items.get(this.head + i)!.seq);
    return out;
  }
}
