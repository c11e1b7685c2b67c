/**
 * A simulated memdiag agent: speaks the real wire protocol (control-plane/src/protocol.ts)
 * over a real websocket to a real control plane, sending schema-valid snapshots
 * whose numbers the test chooses (e.g. an unrooted pool group that grows by one
 * pool per snapshot, like the leaky_upstream fixture). Used by the console tests.
 */
import WebSocket from "ws";
import { AgentIdentity, PROTOCOL_VERSION } from "../../control-plane/src/protocol";
import { AGENT_VERSION } from "../../lua-src/memdiag/contract/version";

export const LEAK_OWNER = "ngx_http_leaky_upstream_module.so (.bss+0x40)";
export const LEAK_SIGNATURE = "c16384:l-:ngx_http_leaky_upstream_module.so(.bss+0x40)";
export const STABLE_SIGNATURE = "c4096:ngx_pool_cleanup_file:nginx(.bss+0x1a0)";
const KB = 1024;
const MB = 1024 * 1024;
/** the leaked upstream server table of one "update": 384 KB, in the 256–512 KB class */
export const LEAK_TABLE_BYTES = 384 * KB;

export interface SimSnapshotOptions {
  pid: number;
  host?: string;
  instance?: string;
  worker_id?: number;
  worker_start: number;
  seq: number;
  time: number;
  /** pools in the leaking group */
  leaked: number;
  /** include deep-scan data (pools.unrooted, glibc.size_classes, scan) */
  deep?: boolean;
  /** bounded noise on RSS and LuaJIT (bytes) */
  jitter?: number;
}

/** a schema-valid snapshot (schema/snapshot.v1.schema.json) */
export function simSnapshot(o: SimSnapshotOptions): Record<string, unknown> {
  const j = o.jitter ?? 0;
  const leakBytes = o.leaked * (16 * KB + LEAK_TABLE_BYTES);
  const heap = 6 * MB + leakBytes;
  const lj = 900 * KB + j;
  const code = 5 * MB;
  const other = 2 * MB;
  const shm = 1 * MB;
  const rss = heap + lj + code + other + shm;
  const s: Record<string, unknown> = {
    schema: 1,
    pid: o.pid,
    host: o.host ?? "sim",
    instance: o.instance ?? "sim:1:/sim/",
    worker_id: o.worker_id ?? 0,
    worker_start: o.worker_start,
    generation: 1,
    nginx_version: "1.22.1",
    agent_version: AGENT_VERSION,
    layout: "sim",
    seq: o.seq,
    time: o.time,
    collect_ms: 1.2,
    slices: 1,
    max_slice_ms: 1.2,
    system: {
      rss_bytes: rss,
      anon_bytes: heap + lj + other,
      file_bytes: code,
      shmem_bytes: shm,
      vm_data_bytes: heap + lj + other + 4 * MB,
      swap_bytes: 0,
      explained_ratio: (rss - other) / rss,
      regions: [
        { class: "glibc_heap", bytes: heap + MB, rss_bytes: heap, mappings: 2 + o.leaked },
        { class: "luajit", bytes: 2 * MB, rss_bytes: lj, mappings: 1 },
        { class: "shm_zone", name: "memdiag", bytes: 16 * MB, rss_bytes: shm, mappings: 1 },
        { class: "code", name: "/usr/sbin/nginx", bytes: 8 * MB, rss_bytes: code, mappings: 4 },
        { class: "other_anon", bytes: 3 * MB, rss_bytes: other, mappings: 3 },
      ],
    },
    glibc: {
      arena_bytes: 6 * MB,
      mmap_bytes: o.leaked * LEAK_TABLE_BYTES,
      mmap_chunks: o.leaked,
      in_use_bytes: 5 * MB + leakBytes,
      free_bytes: MB,
      top_releasable_bytes: 128 * KB,
    },
    luajit: { gc_bytes: lj },
    shm: [{ name: "memdiag", size_bytes: 16 * MB, used_bytes: 200 * KB, free_bytes: 16 * MB - 200 * KB, owner: "memdiag" }],
    pools: {
      available: true,
      groups: [
        { kind: "cycle", pools: 1, blocks: 40, block_bytes: 640 * KB, used_bytes: 600 * KB, large_blocks: 2, large_bytes: 96 * KB, cleanups: [{ handler: "ngx_http_lua_cleanup_vm", count: 1 }] },
        { kind: "connection", pools: 3, blocks: 3, block_bytes: 1536, used_bytes: 900, large_blocks: 0, large_bytes: 0, cleanups: [] },
        { kind: "request", pools: 1, blocks: 1, block_bytes: 4096, used_bytes: 2000, large_blocks: 0, large_bytes: 0, cleanups: [] },
      ],
      connections: { active: 4, connection_n: 1024, free: 1020, by_listener: [{ listen: "127.0.0.1:8080", active: 3 }] },
    },
    skipped: {},
  };
  if (o.deep) {
    const examples: string[] = [];
    for (let i = 0; i < Math.min(8, o.leaked); i++) examples.push("0x" + (0x55d0c0a00000 + i * 0x64000).toString(16));
    (s.pools as Record<string, unknown>).unrooted = [
      {
        signature: LEAK_SIGNATURE,
        create_size: 16384,
        pools: o.leaked,
        blocks: o.leaked,
        block_bytes: o.leaked * 16 * KB,
        used_bytes: o.leaked * 9 * KB,
        large_blocks: o.leaked,
        large_bytes: o.leaked * LEAK_TABLE_BYTES,
        large_histogram: [{ min_bytes: 256 * KB, max_bytes: 512 * KB - 1, count: o.leaked, bytes: o.leaked * LEAK_TABLE_BYTES }],
        cleanups: [],
        log: "ngx_cycle->log",
        owner: LEAK_OWNER,
        retainer: `${LEAK_OWNER} → pool → pool`,
        examples,
      },
      {
        signature: STABLE_SIGNATURE,
        create_size: 4096,
        pools: 2,
        blocks: 2,
        block_bytes: 8 * KB,
        used_bytes: 5 * KB,
        large_blocks: 0,
        large_bytes: 0,
        cleanups: [{ handler: "ngx_pool_cleanup_file", count: 2 }],
        owner: "nginx (.bss+0x1a0)",
        retainer: "nginx (.bss+0x1a0) → pool",
        examples: ["0x55d0c09f0000", "0x55d0c09f8000"],
      },
    ];
    (s.glibc as Record<string, unknown>).size_classes = [
      { min_bytes: 32, max_bytes: 63, chunks: 5000, bytes: 5000 * 48, in_use_chunks: 4800, in_use_bytes: 4800 * 48, free_chunks: 200, free_bytes: 200 * 48 },
      { min_bytes: 1024, max_bytes: 2047, chunks: 300, bytes: 300 * 1500, in_use_chunks: 290, in_use_bytes: 290 * 1500, free_chunks: 10, free_bytes: 15000 },
      { min_bytes: 16384, max_bytes: 32767, chunks: 2 + o.leaked, bytes: (2 + o.leaked) * 16400, in_use_chunks: 2 + o.leaked, in_use_bytes: (2 + o.leaked) * 16400, free_chunks: 0, free_bytes: 0 },
      { min_bytes: 262144, max_bytes: 524287, chunks: 1 + o.leaked, bytes: (1 + o.leaked) * LEAK_TABLE_BYTES, in_use_chunks: 1 + o.leaked, in_use_bytes: (1 + o.leaked) * LEAK_TABLE_BYTES, free_chunks: 0, free_bytes: 0 },
    ];
    s.scan = { state: "done", started: o.time - 0.05, finished: o.time, bytes_scanned: heap, ms_total: 42, max_slice_ms: 0.9, slices: 50 };
  }
  return s;
}

export interface SimCommand {
  id: string;
  command: "collect" | "deep";
}

/** one simulated worker connected to the control plane's /ingest */
export class SimAgent {
  private ws?: WebSocket;
  key = "";
  seq = 0;
  private acks = new Map<number, () => void>();
  private errors: string[] = [];
  readonly commands: SimCommand[] = [];
  onCommand?: (c: SimCommand) => void;

  constructor(readonly url: string, readonly identity: AgentIdentity, readonly token = "") {}

  connect(): Promise<string> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.on("error", reject);
      ws.on("close", (code, reason) => reject(new Error(`closed ${code} ${reason}`)));
      ws.on("open", () => ws.send(JSON.stringify({ type: "hello", protocol: PROTOCOL_VERSION, token: this.token, agent: this.identity })));
      ws.on("message", (data) => {
        const m = JSON.parse(String(data));
        if (m.type === "welcome") {
          this.key = m.worker_key;
          resolve(m.worker_key);
        } else if (m.type === "ack") {
          this.acks.get(m.seq)?.();
          this.acks.delete(m.seq);
        } else if (m.type === "error") {
          this.errors.push(m.error);
        } else if (m.type === "command") {
          const c = { id: m.id, command: m.command };
          this.commands.push(c);
          this.onCommand?.(c);
        }
      });
    });
  }

  /** send one snapshot and wait for its ack (stored) */
  send(snapshot: Record<string, unknown>, reply_to?: string): Promise<void> {
    const seq = snapshot.seq as number;
    this.seq = Math.max(this.seq, seq);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ack for seq ${seq}; errors: ${this.errors.join("; ")}`)), 15000);
      this.acks.set(seq, () => {
        clearTimeout(t);
        resolve();
      });
      this.ws!.send(JSON.stringify({ type: "snapshot", seq, snapshot, ...(reply_to ? { reply_to } : {}) }));
    });
  }

  commandResult(id: string, ok: boolean, error?: string): void {
    this.ws!.send(JSON.stringify({ type: "command_result", id, ok, ...(error ? { error } : {}) }));
  }

  close(): Promise<void> {
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((r) => {
      ws.removeAllListeners("close");
      ws.on("close", () => r());
      ws.close();
    });
  }
}
