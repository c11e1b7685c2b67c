import * as ffi from "ffi";
import { cdef } from "../util/cdef";

/**
 * Whether anything listens on a loopback address and port, from the kernel's table of
 * TCP sockets (/proc/net/tcp, /proc/net/tcp6; /proc/net is the reading process's network
 * namespace, so it is the table the worker's own connect would meet).
 *
 * Why: a cosocket connect that fails is logged at [error] by lua-nginx-module itself while
 * `lua_socket_log_errors` is on (the default, and the application's setting, not ours). The
 * push asks this table before connecting to a control plane on this host, so a control plane
 * that is not running costs no log line at all.
 *
 * Cost: the kernel lists the listening sockets before any other (its iterator walks the
 * listening hash, then the established one), so the read stops at the first line in another
 * state: on a gateway with 100 000 connections the probe still reads only the listeners, in
 * read(2) calls into one fixed C buffer, parsed in place (no Lua string per line). The kernel
 * fills a read with whole lines up to its page-sized buffer and stops early only at the end
 * of the table, so a short read is the end (no second read to be told so). The exception is
 * the IPv6 table without an IPv6 listener: to find its first line the kernel walks its whole
 * TCP hash, IPv4 sockets included, so IPv6 listeners are asked of sock_diag (diagListens6).
 */
cdef(`int memdiag_ls_open(const char *path, int flags) __asm__("open");`);
cdef(`int memdiag_ls_read(int fd, uintptr_t buf, size_t n) __asm__("read");`);
cdef(`int memdiag_ls_close(int fd) __asm__("close");`);

cdef(`int memdiag_ls_socket(int domain, int type, int protocol) __asm__("socket");`);
cdef(`int memdiag_ls_sendto(int fd, uintptr_t buf, size_t n, int flags, uintptr_t addr, uint32_t alen) __asm__("sendto");`);
cdef(`int memdiag_ls_recv(int fd, uintptr_t buf, size_t n, int flags) __asm__("recv");`);

const C = ffi.C;
const lsOpen = C.memdiag_ls_open;
const lsRead = C.memdiag_ls_read;
const lsClose = C.memdiag_ls_close;
const lsSocket = C.memdiag_ls_socket;
const lsSendto = C.memdiag_ls_sendto;
const lsRecv = C.memdiag_ls_recv;

/**
 * Cap (s) of the delay between two looks at the table while nothing listens: a look costs a
 * read of the listeners and logs nothing, so a control plane that starts is found within this.
 */
export const PROBE_MAX_S = 5;

const O_RDONLY_CLOEXEC = 0x80000;
const CHUNK = 16384;
/** longest line kept across reads (a tcp6 line is ~170 bytes) */
const MAX_LINE = 512;
/** a read this much shorter than the kernel's page-sized buffer ended the table */
const SHORT_READ = 2048;
/** more listening sockets than this: the answer is "cannot tell" (the caller connects) */
export const MAX_LINES = 8192;
const TCP_LISTEN = 0x0a;

const bufCdata = ffi.new("uint8_t[?]", CHUNK + MAX_LINE + 8);
/** exported so the module table anchors it: the parser uses its address, a number the GC does not see */
export const listeningBufAnchor = bufCdata;
const base = tonumber(ffi.cast("uintptr_t", bufCdata))!;
const u8 = ffi.cast("const uint8_t *", 0);
const word = ffi.new("uint8_t[4]");
const wordU32 = ffi.cast("const uint32_t *", word);

/**
 * The four address words of one target as /proc/net/tcp6 prints them (each a native-endian
 * 32-bit load of 4 address bytes, in %08X); for /proc/net/tcp only the last word is used.
 */
export interface Target {
  host: string;
  port: number;
  /** the IPv4 address as the v4 table prints it, or undefined for an IPv6-only target */
  v4?: number;
  /** the address as the v6 table prints it (IPv4 targets: their IPv4-mapped form) */
  v6: [number, number, number, number];
}

function nativeWord(a: number, b: number, c: number, d: number): number {
  word[0] = a;
  word[1] = b;
  word[2] = c;
  word[3] = d;
  return tonumber(wordU32[0])!;
}

/**
 * The target for a loopback host (127.0.0.0/8, ::1, localhost), or undefined when the host is
 * not a loopback address: another host's table cannot be read from here.
 */
export function loopbackTarget(host: string, port: number): Target | undefined {
  if (host === "localhost") {
    // may resolve to either: anything listening on one of them
    return { host, port, v4: nativeWord(127, 0, 0, 1), v6: [0, 0, 0, nativeWord(0, 0, 0, 1)] };
  }
  if (host === "::1" || host === "[::1]") return { host, port, v6: [0, 0, 0, nativeWord(0, 0, 0, 1)] };
  const [a, b, c, d] = string.match(host, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$");
  if (a === undefined) return undefined;
  const o = [tonumber(a)!, tonumber(b)!, tonumber(c)!, tonumber(d)!];
  if (o[0] !== 127 || o.some((x) => x > 255)) return undefined;
  const v4 = nativeWord(o[0], o[1], o[2], o[3]);
  return { host, port, v4, v6: [0, 0, nativeWord(0, 0, 0xff, 0xff), v4] };
}

/** host and port of a ws:// or wss:// URL with an explicit port (push/client.ts normalizeUrl) */
export function urlHostPort(url: string): LuaMultiReturn<[string | undefined, number | undefined]> {
  let [host, port] = string.match(url, "^wss?://%[([^%]]+)%]:(%d+)");
  if (host === undefined) [host, port] = string.match(url, "^wss?://([^/:]+):(%d+)");
  if (host === undefined) return $multi(undefined, undefined);
  return $multi(host, tonumber(port));
}

/** hex digits at address `i` into a number; returns it and the address after them */
function hex(i: number, n: number): LuaMultiReturn<[number, number]> {
  let v = 0;
  const stop = i + n;
  for (; i < stop; i++) {
    const c = u8[i];
    if (c >= 48 && c <= 57) v = v * 16 + (c - 48);
    else if (c >= 65 && c <= 70) v = v * 16 + (c - 55);
    else if (c >= 97 && c <= 102) v = v * 16 + (c - 87);
    else return $multi(-1, i);
  }
  return $multi(v, i);
}

/** listener lines read by the last tableListens */
let lines = 0;

/**
 * One line "  sl: LOCAL:PORT REMOTE:PORT ST ..." at [p, e): 1 when it is a listener on the
 * target (its address or the wildcard), 0 when it is not a listener (the listeners are over),
 * -1 when it is another listener, -2 when it is not in the expected shape.
 */
function line(p: number, e: number, v6: boolean, t: Target): number {
  while (p < e && u8[p] === 32) p++;
  while (p < e && u8[p] >= 48 && u8[p] <= 57) p++;
  if (u8[p] !== 58 || u8[p + 1] !== 32) return -2; // ": "
  p += 2;
  let wild = true;
  let mine = true;
  const words = v6 ? 4 : 1;
  for (let w = 0; w < words; w++) {
    const [v, q] = hex(p, 8);
    if (v < 0) return -2;
    p = q;
    if (v !== 0) wild = false;
    const want = v6 ? t.v6[w] : t.v4;
    if (v !== want) mine = false;
  }
  if (u8[p] !== 58) return -2;
  const [port, q] = hex(p + 1, 4);
  if (port < 0 || u8[q] !== 32) return -2;
  p = q + 1;
  while (p < e && u8[p] !== 32) p++; // remote address
  const [st] = hex(p + 1, 2);
  if (st < 0) return -2;
  if (st !== TCP_LISTEN) return 0;
  return port === t.port && (mine || wild) ? 1 : -1;
}

/**
 * Whether the table at `path` (/proc/net/tcp or /proc/net/tcp6 layout) has a listener for the
 * target: true, false, or undefined when it cannot tell (unexpected shape, more than MAX_LINES
 * listeners, a failed read); `missing` when the file cannot be opened.
 */
export function tableListens(path: string, v6: boolean, t: Target, missing?: boolean): boolean | undefined {
  if (!v6 && t.v4 === undefined) return false;
  const fd = lsOpen(path, O_RDONLY_CLOEXEC);
  if (fd < 0) return missing;
  let fill = 0;
  let header = true;
  let result: boolean | undefined = false;
  lines = 0;
  for (;;) {
    const got = lsRead(fd, base + fill, CHUNK);
    if (got < 0) {
      result = undefined;
      break;
    }
    if (got === 0) break; // the table ends inside the listeners
    const last = got < SHORT_READ;
    fill += got;
    let p = base;
    const end = base + fill;
    let verdict = -1;
    for (;;) {
      let e = p;
      while (e < end && u8[e] !== 10) e++;
      if (e >= end) break;
      if (header) header = false;
      else {
        verdict = line(p, e, v6, t);
        lines++;
        if (verdict !== -1 || lines > MAX_LINES) break;
      }
      p = e + 1;
    }
    if (verdict === 1) {
      result = true;
      break;
    }
    if (verdict === 0) break;
    if (verdict === -2 || lines > MAX_LINES) {
      result = undefined;
      break;
    }
    if (last) break;
    // keep the unfinished line for the next read
    const rest = end - p;
    if (rest > MAX_LINE) {
      result = undefined;
      break;
    }
    for (let i = 0; i < rest; i++) bufCdata[i] = u8[p + i];
    fill = rest;
  }
  lsClose(fd);
  return result;
}

/**
 * The IPv6 listeners through sock_diag (netlink): asked for listening sockets only, the kernel
 * walks its listening hash and nothing else, where /proc/net/tcp6 without an IPv6 listener
 * walks every TCP socket of the host (1 ms with 1 000 connections, 1.8 ms with 18 000 on the
 * test machine). Unprivileged, like `ss -l`. One fixed request and receive buffer; the
 * answer is parsed in place. undefined: netlink is not available (the caller reads tcp6).
 */
const AF_NETLINK = 16;
const AF_INET6 = 10;
const SOCK_DGRAM_CLOEXEC = 2 | 0x80000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST_DUMP = 0x1 | 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const MSG_DONTWAIT = 0x40;
const IPPROTO_TCP = 6;
/** nlmsghdr (16) + inet_diag_req_v2 (56) */
const REQ_LEN = 72;
/** nlmsghdr (16) + inet_diag_msg up to the end of id.src (4 + 4 + 16) */
const MSG_MIN = 40;
const RECV_BUF = 32768;
/** receive calls per look: 32 KB holds ~300 listeners, so this bounds it at ~19 000 */
const MAX_RECVS = 64;
const req = ffi.new("uint32_t[?]", REQ_LEN / 4);
const nladdr = ffi.new("uint32_t[3]");
const rbuf = ffi.new("uint8_t[?]", RECV_BUF);
/** exported so the module table anchors them (the calls use their addresses) */
export const diagAnchors = [req, nladdr, rbuf];
const reqAddr = tonumber(ffi.cast("uintptr_t", req))!;
const nlAddr = tonumber(ffi.cast("uintptr_t", nladdr))!;
const rAddr = tonumber(ffi.cast("uintptr_t", rbuf))!;
const u16 = ffi.cast("const uint16_t *", 0);
const u32 = ffi.cast("const uint32_t *", 0);
{
  // fixed parts: header, family, protocol, states = TCP_LISTEN only; everything else zero
  const b = ffi.cast("uint8_t *", req);
  const h = ffi.cast("uint16_t *", req);
  req[0] = REQ_LEN;
  h[2] = SOCK_DIAG_BY_FAMILY;
  h[3] = NLM_F_REQUEST_DUMP;
  b[16] = AF_INET6;
  b[17] = IPPROTO_TCP;
  req[5] = 1 << TCP_LISTEN;
  ffi.cast("uint16_t *", nladdr)[0] = AF_NETLINK;
}

/** 1 = listener on the target, 0 = done without one, -1 = go on, -2 = malformed or an error */
function diagChunk(n: number, t: Target): number {
  let p = rAddr;
  const end = rAddr + n;
  while (p + 16 <= end) {
    const len = tonumber(u32[p / 4])!;
    const typ = u16[(p + 4) / 2];
    if (len < 16 || p + len > end) return -2;
    if (typ === NLMSG_DONE) return 0;
    if (typ === NLMSG_ERROR) return -2;
    if (typ === SOCK_DIAG_BY_FAMILY) {
      if (len < MSG_MIN) return -2;
      const m = p + 16;
      const port = u8[m + 4] * 256 + u8[m + 5];
      if (port === t.port && u8[m + 1] === TCP_LISTEN) {
        let mine = true;
        let wild = true;
        for (let w = 0; w < 4; w++) {
          const v = tonumber(u32[(m + 8 + w * 4) / 4])!;
          if (v !== 0) wild = false;
          if (v !== t.v6[w]) mine = false;
        }
        if (mine || wild) return 1;
      }
    }
    p += len + ((4 - (len % 4)) % 4);
  }
  return -1;
}

export function diagListens6(t: Target): boolean | undefined {
  const fd = lsSocket(AF_NETLINK, SOCK_DGRAM_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return undefined;
  let result: boolean | undefined = undefined;
  if (lsSendto(fd, reqAddr, REQ_LEN, 0, nlAddr, 12) === REQ_LEN) {
    for (let i = 0; i < MAX_RECVS; i++) {
      const n = lsRecv(fd, rAddr, RECV_BUF, MSG_DONTWAIT);
      if (n <= 0) break;
      const v = diagChunk(n, t);
      if (v === 1) result = true;
      else if (v === 0) result = false;
      if (v !== -1) break;
    }
  }
  lsClose(fd);
  return result;
}

/**
 * Whether anything listens on the loopback target (see above); undefined = cannot tell. IPv6
 * listeners (for an IPv4 target: a dual-stack listener on "::") come from sock_diag; without
 * it from /proc/net/tcp6, which for an IPv4 target is read only when `slowOk`.
 */
export function listens(t: Target, slowOk = true): boolean | undefined {
  const a = t.v4 !== undefined ? tableListens("/proc/net/tcp", false, t) : false;
  if (a === true) return true;
  let b = diagListens6(t);
  if (b === undefined) {
    if (!slowOk && t.v4 !== undefined) return a;
    // a kernel without IPv6 has no tcp6 table, and no listener there either (for an IPv4 target)
    b = tableListens("/proc/net/tcp6", true, t, t.v4 !== undefined ? false : undefined);
  }
  if (b === true) return true;
  return a === undefined || b === undefined ? undefined : false;
}

/** listeners seen by the last tableListens (tests) */
export function lastLineCount(): number {
  return lines;
}
