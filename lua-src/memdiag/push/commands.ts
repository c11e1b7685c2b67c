import { collectAndPublish } from "../agent";
import { COMMANDS, ENVELOPE_RESERVE, MAX_ID } from "../contract/protocol";
import { commandResultFrame } from "./frame";
import { runSamplerCommand, samplerResultFrame } from "./sampler_cmd";

/**
 * Commands from the control plane (docs/protocol.md): one at a time per worker, each in its
 * own 0-delay timer so the reader keeps reading. "collect" and "deep" are answered by the
 * next snapshot frame carrying reply_to (the push listener takes it with takeReplyTo);
 * sampler commands by one command_result carrying `result`. Failures are command_result
 * ok:false. The websocket session (client.ts) hands in how to send a control frame.
 */

type DeepHandler = (this: void) => string | undefined;

/** what the command side needs from the websocket session; set once by startPush */
interface Session {
  /** queue a control frame (command_result) for the writer; dropped when there is no connection */
  send?: (this: void, frame: string) => void;
  /** the frame limit on the current connection */
  frameLimit?: (this: void) => number;
  /** a malformed command: one log line per kind (the session's protocol episode) */
  warn?: (this: void, key: string, msg: string) => void;
}
const S: Session = {};

export function attachCommands(send: (this: void, frame: string) => void, frameLimit: (this: void) => number, warn: (this: void, key: string, msg: string) => void): void {
  S.send = send;
  S.frameLimit = frameLimit;
  S.warn = warn;
}

let pendingReplyTo: string | undefined;
let commandBusy = false;
let deepHandler: DeepHandler | undefined = undefined;

/** the command id the next snapshot answers, if any (taken once) */
export function takeReplyTo(): string | undefined {
  const r = pendingReplyTo;
  pendingReplyTo = undefined;
  return r;
}

/** How long a "deep" command waits for the scan before answering ok:false. */
const DEEP_TIMEOUT_S = 300;

interface DeepScanModule {
  runDeepScan?: (this: void) => LuaMultiReturn<[boolean, string | undefined]>;
  waitDeepScan?: (this: void, timeoutS: number) => boolean;
  deepScanRunning?: (this: void) => boolean;
}

/**
 * "deep": start a deep scan (memdiag.deep.scan, loaded on first use so the push
 * works without it) and wait for it; the snapshot collected after it carries
 * its results. Without the module: ok:false "deep scan not available".
 */
function defaultDeep(this: void): string | undefined {
  const [ok, mod] = pcall(require, "memdiag.deep.scan");
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
  // sampler commands are answered by one command_result carrying `result` (push/sampler_cmd.ts)
  if (COMMANDS[command as keyof typeof COMMANDS] === "sampler") {
    const [sok, out] = pcall(() => {
      const [r, e] = runSamplerCommand(command, args);
      return { r, e };
    });
    commandBusy = false;
    if (!sok) S.send!(commandResultFrame(id, false, `command failed: ${out}`));
    else if (out.r === undefined) S.send!(commandResultFrame(id, false, out.e ?? "sampler command failed"));
    else S.send!(samplerResultFrame(id, out.r, S.frameLimit!() - ENVELOPE_RESERVE) ?? commandResultFrame(id, false, `result does not fit the frame limit ${S.frameLimit!()}`));
    return;
  }
  const [ok, res] = pcall(execute, id, command);
  commandBusy = false;
  if (pendingReplyTo === id) pendingReplyTo = undefined;
  const err = ok ? res : `command failed: ${res}`;
  if (err !== undefined) S.send!(commandResultFrame(id, false, err));
}

export function handleCommand(msg: { [k: string]: unknown }): void {
  const id = msg["id"];
  const command = msg["command"];
  if (type(id) !== "string" || (id as string).length === 0 || (id as string).length > MAX_ID) {
    S.warn!("id", "command without a usable id ignored");
    return;
  }
  if (type(command) !== "string" || COMMANDS[command as keyof typeof COMMANDS] === undefined) {
    S.send!(commandResultFrame(id as string, false, `unknown command '${tostring(command)}'`));
    return;
  }
  if (commandBusy) {
    S.send!(commandResultFrame(id as string, false, "another command is running"));
    return;
  }
  commandBusy = true;
  const [ok, err] = ngx.timer.at(0, runCommand, id, command, msg["args"]);
  if (!ok) {
    commandBusy = false;
    S.send!(commandResultFrame(id as string, false, `cannot schedule: ${err}`));
  }
}
