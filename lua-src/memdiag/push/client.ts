import * as semaphore from "ngx.semaphore";
import { config } from "../config";
import { collectAndPublish, onSnapshot } from "../agent";
import { arr, decode } from "../util/json";
import { cpuMs } from "../util/clock";
import { registerParam } from "../http/endpoint";
import { Entry, Ring } from "./queue";
import { Backoff, seededRand } from "./backoff";
import { listens, loopbackTarget, PROBE_MAX_S, Target, urlHostPort } from "./listening";
import { Episode } from "../util/episode";
import { endTurn, holdTurn, takeTurn } from "./turn";
import { trimToFit } from "./trim";
import { commandResultFrame, ENVELOPE_RESERVE, helloFrame, HelloAgent, MAX_ID, snapshotFrame } from "./frame";
import { runSamplerCommand, SAMPLER_COMMANDS, samplerResultFrame } from "./sampler_cmd";

/**
 * Worker → control plane push (docs/protocol.md, control-plane/src/protocol.ts).
 *
 * One websocket per worker, owned by one timer light thread (the writer) that
 * connects, says hello, and sends queued snapshots in order; a child light
 * thread reads acks, errors and commands (cosockets are full duplex between
 * one reader and one writer). Requests never wait on any of it: the snapshot
 * listener only appends to a bounded ring and posts a semaphore.
 *
 * Delivery is at-least-once: an entry leaves the ring only on its ack, so a
 * control plane killed mid-stream gets every unacked snapshot again after the
 * reconnect (it may see a seq twice).
 */

/** frames sent and not acked on one connection */
const WINDOW = 16;
/** fragments of large frames: bounds the time the worker spends masking one piece */
const FRAGMENT = 65536;
/** a frame sent this many times without an ack is dropped (it may be what kills the connection) */
const MAX_ATTEMPTS = 5;
/** idle connection: ping after this long; no frame at all for READ_TIMEOUT means the peer is gone */
const PING_EVERY_S = 20;
const READ_TIMEOUT_MS = 65000;
const CONNECT_TIMEOUT_MS = 5000;
const SEND_TIMEOUT_MS = 15000;
const HELLO_TIMEOUT_MS = 5000;
/** a frame unacked this long means the control plane is stuck: reconnect and send again */
const ACK_TIMEOUT_S = 60;
/** control frames (command results, pongs) waiting for the writer */
const MAX_CONTROL = 32;

type WsModule = WebSocketClientModule;

interface Conn {
  ws: WebSocketClient;
  dead: boolean;
  readerDone?: boolean;
  err?: string;
  closeCode?: number;
}

/** Runs a deep scan to completion (may yield); returns an error, or undefined when done. */
type DeepHandler = (this: void) => string | undefined;

let started = false;
let queue: Ring | undefined;
let sema: NgxSemaphore | undefined;
let wsmod: WsModule | undefined;
let conn: Conn | undefined;
/** the control plane's max frame size from welcome (0 = not told) */
let serverMax = 0;
const control: string[] = [];
const rand = seededRand(ngx.worker.pid() * 7919 + ngx.now() * 1000);
/** after a failed connection or handshake; its cap depends on where the control plane is (capFor) */
const backoff = new Backoff(0.5, 30, 2, rand);
const probeBackoff = new Backoff(0.5, PROBE_MAX_S, 2, rand);
let stopping = false;
let lastIdent: HelloAgent | undefined;
/** the latest snapshot as a table (one, not queued ones): lets the newest entry be trimmed again for a smaller limit */
let lastSnap: { [k: string]: unknown } | undefined;
let pendingReplyTo: string | undefined;
let commandBusy = false;
let deepHandler: DeepHandler | undefined = undefined;

/** For tests and /_memdiag: what the push is doing. */
export const stats = {
  /** worker CPU spent in the push's own code (enqueue, trim, framing, masking+send), and its longest single piece */
  cpu_ms: 0,
  max_piece_ms: 0,
  connected: false,
  connects: 0,
  /** looks at the listening-socket table that found nothing listening (no connect made) */
  probes_idle: 0,
  /** connects that failed (nginx logs each when lua_socket_log_errors is on and TCP failed) */
  failed_connects: 0,
  /** waits while another worker had the turn at a control plane this host cannot see (push/turn.ts) */
  turns_waited: 0,
  sent: 0,
  acked: 0,
  rejected: 0,
  trimmed: 0,
  last_error: "",
};

/** How long a "deep" command waits for the scan before answering ok:false. */
const DEEP_TIMEOUT_S = 300;

interface DeepScanModule {
  runDeepScan?: (this: void) => LuaMultiReturn<[boolean, string | undefined]>;
  waitDeepScan?: (this: void, timeoutS: number) => boolean;
  deepScanRunning?: (this: void) => boolean;
}

/**
 * "deep": start a deep scan (memdiag.scan.deep, loaded on first use so the push
 * works without it) and wait for it; the snapshot collected after it carries
 * its results. Without the module: ok:false "deep scan not available".
 */
function defaultDeep(this: void): string | undefined {
  const [ok, mod] = pcall(require, "memdiag.scan.deep");
  const m = mod as DeepScanModule;
  if (!ok || type(mod) !== "table" || type(m.runDeepScan) !== "function" || type(m.waitDeepScan) !== "function") {
    return "deep scan not available";
  }
  const [started, err] = m.runDeepScan!();
  // one already running is as good: wait for it
  if (!started && !(m.deepScanRunning && m.deepScanRunning())) return err ?? "deep scan did not start";
  if (!m.waitDeepScan!(DEEP_TIMEOUT_S)) return `deep scan did not finish within ${DEEP_TIMEOUT_S} s`;
  return undefined;
}

/** Replace how "deep" commands run a deep scan (tests, other scan engines). */
export function setDeepHandler(fn: DeepHandler): void {
  deepHandler = fn;
}

function log(level: number, msg: string): void {
  ngx.log(level, "memdiag push: ", msg);
}

/**
 * Everything that can repeat is logged as an episode (util/episode.ts): a line when it starts
 * or changes, a line with the count when it ends. Separate episodes, so that the queue filling
 * up does not count as a new connection error.
 */
const PREFIX = "memdiag push: ";
/** reachability: "away" (nothing listens, refused, timed out, connection lost), "token", "close <code>" */
const connEp = new Episode(PREFIX, ["attempt", "attempts"]);
const queueEp = new Episode(PREFIX, ["dropped snapshot", "dropped snapshots"]);
/** snapshots dropped for their size or for never being acked */
const frameEp = new Episode(PREFIX, ["dropped snapshot", "dropped snapshots"]);
const rejectEp = new Episode(PREFIX, ["rejected snapshot", "rejected snapshots"]);
const transientEp = new Episode(PREFIX, ["deferral", "deferrals"]);
/** frames from the control plane this agent cannot use */
const protoEp = new Episode(PREFIX, ["ignored frame", "ignored frames"]);
const timerEp = new Episode(PREFIX, ["failure", "failures"]);
const clientEp = new Episode(PREFIX, ["restart", "restarts"]);

function fail(ep: Episode, level: number, key: string, msg: string, detail = ""): void {
  stats.last_error = msg;
  ep.hit(level, key, msg, detail);
}

function wake(): void {
  if (sema && sema.count() < 1) sema.post(1);
}

function exiting(): boolean {
  return stopping || ngx.worker.exiting();
}

/** Frame limit in force: the smaller of ours and the control plane's. */
function frameLimit(): number {
  const mine = config.max_frame_bytes;
  return serverMax > 0 && serverMax < mine ? serverMax : mine;
}

/** the websocket client module in use (OpenResty's name first, then Debian's) */
let wsLibrary: string | undefined;

function loadWebsocket(): WsModule | undefined {
  for (const name of ["resty.websocket.client", "nginx.websocket.client"]) {
    const [ok, mod] = pcall(require, name);
    if (ok && type(mod) === "table") {
      wsLibrary = name;
      return mod as WsModule;
    }
  }
  return undefined;
}

/** lua-resty-websocket 0.08 defaults wss:// without a port to 80; make the port explicit. */
export function normalizeUrl(url: string): string {
  const [scheme, host, rest] = string.match(url, "^(wss?)://([^/:]+)(.*)$");
  if (scheme === undefined) return url;
  if (string.sub(rest!, 1, 1) === ":") return url;
  return `${scheme}://${host}:${scheme === "wss" ? 443 : 80}${rest}`;
}

// ---- enqueue (runs wherever a snapshot is collected: timer or request) ----

function enqueue(seq: number, json: string, reply_to: string | undefined, trimmed: string[] | undefined): void {
  const q = queue!;
  const had = q.droppedTotal;
  q.push(seq, json, reply_to, trimmed);
  if (q.droppedTotal > had) {
    fail(queueEp, ngx.WARN, "full", `control plane away: queue full (${q.maxCount} snapshots / ${q.maxBytes} bytes), dropping the oldest`);
    queueEp.count += q.droppedTotal - had - 1;
  }
  wake();
}

/** 0-delay timer: trims a snapshot a request collected (?fresh=1) after the response */
function trimAndEnqueue(this: void, _premature: boolean, snap: { [k: string]: unknown }, reply_to: string | undefined): void {
  const t0 = cpuMs();
  trimNow(snap, reply_to);
  account(cpuMs() - t0);
}

function trimNow(snap: { [k: string]: unknown }, reply_to: string | undefined): void {
  const seq = snap["seq"] as number;
  const [json, names] = trimToFit(snap, frameLimit() - ENVELOPE_RESERVE);
  if (json === undefined) {
    queue!.droppedPending += 1;
    queue!.droppedTotal += 1;
    fail(frameEp, ngx.ERR, "fit", `snapshot ${seq} does not fit max_frame_bytes ${frameLimit()} even after trimming ${names.join(", ")}; dropped`);
    return;
  }
  stats.trimmed++;
  enqueue(seq, json, reply_to, names);
}

function listener(this: void, json: string, snap: { [k: string]: unknown }): void {
  if (!started) return;
  const t0 = cpuMs();
  enqueueSnapshot(json, snap);
  account(cpuMs() - t0);
}

function account(ms: number): void {
  stats.cpu_ms += ms;
  if (ms > stats.max_piece_ms) stats.max_piece_ms = ms;
}

function enqueueSnapshot(json: string, snap: { [k: string]: unknown }): void {
  const seq = snap["seq"];
  if (type(seq) !== "number") return;
  lastIdent = {
    host: snap["host"] as string,
    instance: snap["instance"] as string,
    pid: snap["pid"] as number,
    worker_id: snap["worker_id"] as number,
    worker_start: snap["worker_start"] as number,
    generation: snap["generation"] as number,
    nginx_version: snap["nginx_version"] as string,
    agent_version: snap["agent_version"] as string,
  };
  lastSnap = snap;
  const reply_to = pendingReplyTo;
  pendingReplyTo = undefined;
  if (json.length + ENVELOPE_RESERVE <= frameLimit()) {
    enqueue(seq as number, json, reply_to, undefined);
  } else if (ngx.get_phase() === "timer") {
    trimNow(snap, reply_to);
  } else {
    // a request collected it (?fresh=1): trim after the response, not during it
    const [ok, err] = ngx.timer.at(0, trimAndEnqueue, snap, reply_to);
    if (!ok) fail(timerEp, ngx.ERR, "trim", `cannot schedule trimming: ${err}`);
  }
  wake();
}

// ---- commands (server → agent) ----

function sendControl(frame: string): void {
  if (!conn || conn.dead) return;
  if (control.length >= MAX_CONTROL) return;
  control.push(frame);
  wake();
}

function execute(id: string, command: string): string | undefined {
  if (command === "deep") {
    const [pok, derr] = pcall(deepHandler ?? defaultDeep);
    if (!pok) return `deep scan failed: ${derr}`;
    if (derr !== undefined) return derr;
  }
  pendingReplyTo = id;
  const [json, cerr] = collectAndPublish(true);
  // the listener takes pendingReplyTo; still set means no snapshot went out for it
  if (pendingReplyTo === id) {
    pendingReplyTo = undefined;
    return cerr ?? (json === undefined ? "collection failed" : "collection did not reach the push queue");
  }
  return undefined;
}

function runCommand(this: void, premature: boolean, id: string, command: string, args: unknown): void {
  if (premature) {
    commandBusy = false;
    return;
  }
  // [sampler commands] answered by one command_result carrying `result` (push/sampler_cmd.ts)
  if (SAMPLER_COMMANDS[command]) {
    const [sok, out] = pcall(() => {
      const [r, e] = runSamplerCommand(command, args);
      return { r, e };
    });
    commandBusy = false;
    if (!sok) sendControl(commandResultFrame(id, false, `command failed: ${out}`));
    else if (out.r === undefined) sendControl(commandResultFrame(id, false, out.e ?? "sampler command failed"));
    else sendControl(samplerResultFrame(id, out.r, frameLimit() - ENVELOPE_RESERVE) ?? commandResultFrame(id, false, `result does not fit the frame limit ${frameLimit()}`));
    return;
  }
  const [ok, res] = pcall(execute, id, command);
  commandBusy = false;
  if (pendingReplyTo === id) pendingReplyTo = undefined;
  const err = ok ? res : `command failed: ${res}`;
  if (err !== undefined) sendControl(commandResultFrame(id, false, err));
}

function handleCommand(msg: { [k: string]: unknown }): void {
  const id = msg["id"];
  const command = msg["command"];
  if (type(id) !== "string" || (id as string).length === 0 || (id as string).length > MAX_ID) {
    protoEp.hit(ngx.WARN, "id", "command without a usable id ignored");
    return;
  }
  if (command !== "collect" && command !== "deep" && !(type(command) === "string" && SAMPLER_COMMANDS[command as string])) {
    sendControl(commandResultFrame(id as string, false, `unknown command '${tostring(command)}'`));
    return;
  }
  if (commandBusy) {
    sendControl(commandResultFrame(id as string, false, "another command is running"));
    return;
  }
  commandBusy = true;
  const [ok, err] = ngx.timer.at(0, runCommand, id, command, msg["args"]);
  if (!ok) {
    commandBusy = false;
    sendControl(commandResultFrame(id as string, false, `cannot schedule: ${err}`));
  }
}

// ---- reader light thread ----

/** pause before sending snapshots again after a transient error */
const TRANSIENT_HOLD_S = 2;
/** no snapshot frames before this time (ngx.now()) */
let holdUntil = 0;

/**
 * An error reply that means "not now" rather than "never": `retry: true`, or the
 * control plane's wording for a full storage backlog ("resend later").
 */
function isTransient(msg: { [k: string]: unknown }): boolean {
  if (msg["retry"] === true) return true;
  const e = msg["error"];
  if (type(e) !== "string") return false;
  const [a] = string.find(string.lower(e as string), "resend later", 1, true);
  const [b] = string.find(string.lower(e as string), "retry later", 1, true);
  return a !== undefined || b !== undefined;
}

function handleText(c: Conn, data: string): void {
  const [msg] = decode(data);
  if (type(msg) !== "table") {
    protoEp.hit(ngx.WARN, "json", "unparsable frame from control plane ignored");
    return;
  }
  const t = msg["type"];
  const q = queue!;
  if (t === "ack") {
    const e = q.ack(msg["seq"] as number);
    if (e) stats.acked++;
    // stored: whatever kept snapshots from being stored is over
    rejectEp.end(ngx.NOTICE, "control plane stores snapshots again", false);
    transientEp.end(ngx.NOTICE, "control plane stores snapshots again", false);
    frameEp.end(ngx.NOTICE, "snapshots go through again", false);
    wake();
  } else if (t === "error") {
    const seq = msg["seq"];
    if (type(seq) === "number" && isTransient(msg)) {
      // not stored for now (e.g. its storage is down): keep it and send it again a little later
      const e = q.find(seq as number);
      if (e && e.sent) {
        e.sent = false;
        e.attempts = Math.max(0, e.attempts - 1); // not the frame's fault
      }
      holdUntil = ngx.now() + TRANSIENT_HOLD_S;
      fail(transientEp, ngx.WARN, tostring(msg["error"]), `control plane could not store snapshot ${seq} for now: ${tostring(msg["error"])}`, `; sending again in ${TRANSIENT_HOLD_S} s`);
    } else if (type(seq) === "number") {
      // rejected, nothing stored: sending it again would be rejected again
      const e = q.reject(seq as number);
      stats.rejected++;
      fail(rejectEp, ngx.ERR, tostring(msg["error"]), `control plane rejected snapshot ${seq}${e ? "" : " (no longer queued)"}: ${tostring(msg["error"])}`);
      wake();
    } else {
      fail(rejectEp, ngx.ERR, tostring(msg["error"]), `control plane error: ${tostring(msg["error"])}`);
    }
  } else if (t === "command") {
    handleCommand(msg);
  } else if (t === "welcome") {
    // only expected once, during the handshake
  } else {
    protoEp.hit(ngx.WARN, `type ${tostring(t)}`, `unknown message type '${tostring(t)}' from control plane ignored`);
  }
}

export function describeClose(code: number | undefined, reason: string | undefined): string {
  const r = reason !== undefined && reason !== "" ? `: ${reason}` : "";
  if (code === 4401) return `control plane rejected the token (close 4401 unauthorized${r}); check the token in memdiag.config.json`;
  if (code === 4402) return `control plane wanted a hello first (close 4402${r})`;
  if (code === 4400) return `control plane closed the connection after bad frames (close 4400${r})`;
  if (code === 4415) return `control plane does not understand a message type (close 4415${r})`;
  if (code === 1009) return `control plane refused a frame as too large (close 1009${r})`;
  return `control plane closed the connection (close ${code ?? "without code"}${r})`;
}

function reader(this: void, c: Conn): void {
  while (!c.dead) {
    const [data, typ, err] = c.ws.recv_frame();
    if (data === undefined) {
      if (c.dead) break;
      c.dead = true;
      c.err = `connection lost: ${tostring(err)}`;
      break;
    }
    if (typ === "text") handleText(c, data);
    else if (typ === "close") {
      c.dead = true;
      if (c.err === undefined) {
        // the control plane closed; when we started the close (c.err set), this is only its echo
        c.closeCode = err as number | undefined;
        c.err = describeClose(c.closeCode, data);
      }
      break;
    } else if (typ === "ping") {
      if (control.length < MAX_CONTROL) control.push("\0pong" + data);
      wake();
    }
  }
  c.readerDone = true;
  wake();
}

// ---- writer (owns the connection) ----

function sendFrame(ws: WebSocketClient, frame: string): LuaMultiReturn<[boolean, string | undefined]> {
  const n = frame.length;
  if (n <= FRAGMENT) {
    const t0 = cpuMs();
    const [ok, err] = ws.send_text(frame);
    account(cpuMs() - t0);
    return $multi(ok !== undefined, err);
  }
  // one message in fragments: each is masked in one go (a Lua loop over its bytes),
  // so a large snapshot never holds the worker's event loop for more than one fragment
  for (let i = 1; i <= n; i += FRAGMENT) {
    const last = i + FRAGMENT > n;
    const t0 = cpuMs();
    const [ok, err] = ws.send_frame(last, i === 1 ? 0x1 : 0x0, string.sub(frame, i, i + FRAGMENT - 1));
    account(cpuMs() - t0);
    if (ok === undefined) return $multi(false, err);
    // (ngx.sleep(0) warns on builds without the delayed-events patch, Debian's included)
    if (!last) ngx.sleep(0.001);
  }
  return $multi(true, undefined);
}

/** Connect and handshake; returns the connection or an error. */
function connect(): LuaMultiReturn<[Conn | undefined, string | undefined, number | undefined]> {
  const [ws, nerr] = wsmod!.new({ timeout: CONNECT_TIMEOUT_MS, max_payload_len: Math.max(config.max_frame_bytes, 65535) });
  if (!ws) return $multi(undefined, `cannot create websocket: ${nerr}`, undefined);
  const url = normalizeUrl(config.control_plane_url);
  const [ok, err] = ws.connect(url);
  if (!ok) {
    // a failed handshake can leave the TCP connection open: do not wait for the GC to close it
    ws.sock.close();
    return $multi(undefined, `cannot reach control plane at ${config.control_plane_url}: ${err}`, undefined);
  }
  ws.sock.settimeouts(CONNECT_TIMEOUT_MS, SEND_TIMEOUT_MS, HELLO_TIMEOUT_MS);
  const [sok, serr] = ws.send_text(helloFrame(config.token, lastIdent!));
  if (!sok) {
    ws.close();
    return $multi(undefined, `cannot send hello: ${serr}`, undefined);
  }
  let lastError: string | undefined;
  for (let i = 0; i < 20; i++) {
    const [data, typ, rerr] = ws.recv_frame();
    if (data === undefined) {
      ws.close();
      return $multi(undefined, lastError ?? `no welcome from control plane: ${tostring(rerr)}`, undefined);
    }
    if (typ === "close") {
      ws.close();
      const code = rerr as number | undefined;
      return $multi(undefined, describeClose(code, data !== "" ? data : lastError), code);
    }
    if (typ === "ping") {
      ws.send_pong(data);
      continue;
    }
    if (typ !== "text") continue;
    const [msg] = decode(data);
    if (type(msg) !== "table") continue;
    if (msg["type"] === "welcome") {
      const m = msg["max_frame_bytes"];
      serverMax = type(m) === "number" && (m as number) > 0 ? (m as number) : 0;
      ws.sock.settimeouts(CONNECT_TIMEOUT_MS, SEND_TIMEOUT_MS, READ_TIMEOUT_MS);
      return $multi({ ws, dead: false }, undefined, undefined);
    }
    if (msg["type"] === "error") lastError = `control plane: ${tostring(msg["error"])}`;
  }
  ws.close();
  return $multi(undefined, "no welcome from control plane", undefined);
}

/** Sleep up to `s` seconds, waking early when the worker exits. */
function pause(s: number): void {
  const until = ngx.now() + s;
  while (!exiting()) {
    ngx.update_time();
    const left = until - ngx.now();
    if (left <= 0) break;
    sema!.wait(Math.min(left, 1));
  }
}

/** Send what is due on the connection: control frames, then queued snapshots in order. */
function flush(c: Conn): void {
  while (control.length > 0 && !c.dead) {
    const f = control.shift()!;
    // "\0pong<data>" answers a ping, "\0ping" is our keepalive (its pong keeps the read side alive)
    const kind = string.sub(f, 1, 5);
    let ok: number | undefined;
    let err: string | undefined;
    if (kind === "\0pong") [ok, err] = c.ws.send_pong(string.sub(f, 6));
    else if (kind === "\0ping") [ok, err] = c.ws.send_ping("memdiag");
    else {
      // fragmented when large (sampler_top results)
      const [sok, serr] = sendFrame(c.ws, f);
      ok = sok ? 1 : undefined;
      err = serr;
    }
    if (!ok) {
      c.dead = true;
      c.err = `send failed: ${err}`;
    }
  }
  const q = queue!;
  if (ngx.now() < holdUntil) return;
  while (!c.dead && q.inflight() < WINDOW) {
    const e: Entry | undefined = q.nextUnsent();
    if (!e) break;
    if (e.attempts >= MAX_ATTEMPTS) {
      q.discard(e.seq);
      fail(frameEp, ngx.ERR, "unacked", `snapshot ${e.seq} sent ${e.attempts} times without an ack; dropped`);
      continue;
    }
    if (e.dropped === undefined) e.dropped = q.takeDropped();
    const tf = cpuMs();
    let frame = snapshotFrame(e.seq, e.json, e.reply_to, e.dropped);
    account(cpuMs() - tf);
    if (frame.length > frameLimit() && lastSnap !== undefined && lastSnap["seq"] === e.seq) {
      // queued before the control plane announced a smaller limit, and still the newest: trim it again
      const [json, names] = trimToFit(lastSnap, frameLimit() - ENVELOPE_RESERVE);
      if (json !== undefined) {
        q.rewrite(e, json, names);
        stats.trimmed++;
        frame = snapshotFrame(e.seq, e.json, e.reply_to, e.dropped);
      }
    }
    if (frame.length > frameLimit()) {
      // the control plane lowered its limit after this one was queued
      q.discard(e.seq);
      fail(frameEp, ngx.ERR, "limit", `snapshot ${e.seq} (${frame.length} bytes) is above the control plane's max frame ${frameLimit()}; dropped`);
      continue;
    }
    e.sent = true;
    e.attempts++;
    e.sentAt = ngx.now();
    const [ok, err] = sendFrame(c.ws, frame);
    if (!ok) {
      c.dead = true;
      c.err = `send failed: ${err}`;
      break;
    }
    stats.sent++;
  }
}

function session(c: Conn): void {
  conn = c;
  stats.connected = true;
  const rd = ngx.thread.spawn(reader, c);
  let lastActivity = ngx.now();
  while (!c.dead && !exiting()) {
    const before = stats.sent + stats.acked;
    flush(c);
    if (c.dead || exiting()) break;
    sema!.wait(ngx.now() < holdUntil ? Math.max(0.05, Math.min(1, holdUntil - ngx.now())) : 1);
    ngx.update_time();
    const stuck = queue!.oldestInflight();
    if (stuck && stuck.sentAt !== undefined && ngx.now() - stuck.sentAt > ACK_TIMEOUT_S) {
      c.err = `no ack for snapshot ${stuck.seq} in ${ACK_TIMEOUT_S} s`;
      break;
    }
    if (stats.sent + stats.acked !== before) lastActivity = ngx.now();
    else if (ngx.now() - lastActivity >= PING_EVERY_S) {
      control.push("\0ping");
      lastActivity = ngx.now();
    }
  }
  conn = undefined;
  stats.connected = false;
  if (!c.dead) {
    // leaving on our own (worker exit, stuck control plane): close handshake while the reader still
    // owns the read side (killing a thread blocked in a cosocket read closes the socket under us)
    if (exiting()) c.ws.send_close(1001, "worker exiting");
    else c.ws.send_close(1000, c.err ?? "closing");
    ngx.update_time();
    const until = ngx.now() + 1;
    while (!c.readerDone && ngx.now() < until) {
      sema!.wait(0.1);
      ngx.update_time();
    }
  }
  c.dead = true;
  if (!c.readerDone) ngx.thread.kill(rd);
  c.ws.close();
  control.length = 0;
  queue!.resetSent();
  if (c.closeCode === 1009) {
    // the frame in flight was too large for the control plane: do not send it forever
    const e = queue!.nextUnsent();
    if (e && e.attempts > 0) queue!.discard(e.seq);
  }
}

/** What a failed attempt counts as: the same key is the same episode (one log line). */
function failureKey(code: number | undefined): string {
  if (code === 4401) return "token";
  // the control plane shutting down (1001) or gone without a close: it is away
  if (code === undefined || code === 1001 || code === 1006) return "away";
  return `close ${code}`;
}

/**
 * Cap of the reconnect delay: a control plane on this host whose listening socket the agent
 * can see costs nothing while it is away (the probe), so failures there are handshakes that
 * went wrong; anywhere else each attempt against a control plane that is down makes nginx log
 * a connect error (lua_socket_log_errors), so they are spread much further apart.
 */
function capFor(probed: boolean): number {
  return probed ? config.reconnect_max_s : config.remote_reconnect_max_s;
}

/** The loopback target of control_plane_url, or undefined for another host. */
function probeTarget(): Target | undefined {
  const [host, port] = urlHostPort(normalizeUrl(config.control_plane_url));
  return host !== undefined && port !== undefined ? loopbackTarget(host, port) : undefined;
}

/** how long a turn at a control plane this host cannot see lasts beyond the wait before the attempt */
const TURN_MARGIN_S = (CONNECT_TIMEOUT_MS + HELLO_TIMEOUT_MS) / 1000 + 1;

/** without sock_diag, for an IPv4 control plane: every how many looks /proc/net/tcp6 is read too (a dual-stack listener on "::") */
const V6_EVERY = 6;

function retry(key: string, level: number, msg: string, cap: number, turn: boolean): void {
  backoff.max = cap;
  const delay = backoff.next();
  if (turn) holdTurn(delay + TURN_MARGIN_S);
  fail(connEp, level, key, msg, `; retrying with backoff (next in ${string.format("%.1f", delay)} s, then up to ${cap} s apart; logged again when this changes)`);
  pause(delay);
}

function loop(): void {
  // the hello carries the worker's identity, known once the first snapshot is taken
  while (!lastIdent && !exiting()) sema!.wait(1);
  const target = probeTarget();
  const url = config.control_plane_url;
  let looks = 0;
  while (!exiting()) {
    // without sock_diag the IPv6 table costs a walk of the kernel's whole TCP hash (listening.ts): every few looks
    const up = target !== undefined ? listens(target, looks++ % V6_EVERY === 0) : undefined;
    if (up === false) {
      // nothing listens: no connect (nginx would log its failure), look again soon
      const delay = probeBackoff.next();
      stats.probes_idle++;
      fail(connEp, ngx.WARN, "away", `no control plane listening at ${url}`, ` (kernel's listening sockets); looking again every ${PROBE_MAX_S} s at most, without connecting; logged again when this changes`);
      pause(delay);
      continue;
    }
    const probed = up === true;
    if (!probed) {
      const [mine, failing] = takeTurn(TURN_MARGIN_S);
      if (!mine) {
        // another worker of this nginx is trying: wait for its turn to end
        stats.turns_waited++;
        if (failing) fail(connEp, ngx.WARN, "away", `control plane at ${url} unreachable`, `; one worker of this nginx at a time tries to connect, the others look again every ${PROBE_MAX_S} s at most; logged again when this changes`);
        pause(probeBackoff.next());
        continue;
      }
    }
    const [c, err, code] = connect();
    if (!c) {
      stats.failed_connects++;
      retry(failureKey(code), ngx.WARN, `${err}`, capFor(probed), !probed);
      continue;
    }
    if (!probed) endTurn();
    stats.connects++;
    backoff.reset();
    probeBackoff.reset();
    if (!connEp.end(ngx.NOTICE, `connected to control plane at ${url}`)) log(ngx.INFO, `connected to control plane at ${url}`);
    queueEp.end(ngx.NOTICE, "control plane back, the queue drains");
    timerEp.end(ngx.NOTICE, "trimming is scheduled again", false);
    stats.last_error = "";
    session(c);
    protoEp.end(ngx.NOTICE, "connection ended", false);
    if (exiting()) break;
    retry(failureKey(c.closeCode), ngx.WARN, `lost the connection to the control plane at ${url}: ${c.err ?? "connection closed"}`, capFor(target !== undefined), false);
  }
  endTurn();
  connEp.end(ngx.INFO, "worker exiting; stopped trying to reach the control plane", false);
}

function runClient(this: void, premature: boolean): void {
  if (premature || exiting()) return;
  const [ok, err] = xpcall(loop, debug.traceback);
  if (!ok) {
    fail(clientEp, ngx.ERR, tostring(err), `client failed: ${err}`);
    if (!exiting()) {
      const [tok, terr] = ngx.timer.at(backoff.next(), runClient);
      if (!tok) log(ngx.ERR, `cannot restart client: ${terr}`);
    }
  }
}

/** Fires early (premature) when the worker starts shutting down: wake the writer so it closes now. */
function exitWatch(this: void, premature: boolean): void {
  if (premature) {
    stopping = true;
    if (sema) sema.post(8);
    return;
  }
  ngx.timer.at(3600, exitWatch);
}

/** Called from init (init_worker) when control_plane_url is set: registers the listener and starts the client timer. */
export function startPush(): void {
  if (started) return;
  const mod = loadWebsocket();
  if (!mod) {
    log(ngx.ERR, "no websocket client library (resty.websocket.client or nginx.websocket.client); snapshots are not pushed");
    return;
  }
  wsmod = mod;
  const [s, serr] = semaphore.new(0);
  if (!s) {
    log(ngx.ERR, `cannot create semaphore: ${serr}`);
    return;
  }
  sema = s;
  queue = new Ring(config.queue_max_snapshots, config.queue_max_bytes);
  started = true;
  onSnapshot(listener);
  const [ok, err] = ngx.timer.at(0, runClient);
  if (!ok) {
    log(ngx.ERR, `cannot start client timer: ${err}`);
    started = false;
    return;
  }
  ngx.timer.at(3600, exitWatch);
}

/** The ring (tests, diagnostics). */
export function pushQueue(): Ring | undefined {
  return queue;
}

/** This worker's push state: /_memdiag?push=1 (answered by whichever worker takes the request). */
export function pushStatus(): { [k: string]: unknown } {
  const q = queue;
  return {
    pid: ngx.worker.pid(),
    enabled: started,
    url: config.control_plane_url,
    library: wsLibrary,
    connected: stats.connected,
    connects: stats.connects,
    probes_idle: stats.probes_idle,
    failed_connects: stats.failed_connects,
    turns_waited: stats.turns_waited,
    sent: stats.sent,
    cpu_ms: stats.cpu_ms,
    max_piece_ms: stats.max_piece_ms,
    acked: stats.acked,
    rejected: stats.rejected,
    trimmed: stats.trimmed,
    last_error: stats.last_error,
    frame_limit: frameLimit(),
    queue: q
      ? { count: q.count, bytes: q.bytes, max_count: q.maxCount, max_bytes: q.maxBytes, inflight: q.inflight(), dropped_total: q.droppedTotal, dropped_pending: q.droppedPending, seqs: arr(q.seqs()) }
      : undefined,
  };
}

registerParam("push", "1 = this worker's websocket push state (connection, queue, counters)", undefined, () => $multi(200, pushStatus()), () => true);
