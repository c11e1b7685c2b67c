import { Layout, off, sizeOf } from "./types";
import { noJit } from "../base/nojit";

/**
 * Where the rooted pool walk finds its roots in nginx's structs: connections, requests,
 * listening sockets and, in builds with HTTP/2, the streams of a connection's priority tree.
 * Resolved from the layout once per collection.
 */

/** Offsets the slot loop needs, resolved once per collection. */
export interface RootOffsets {
  cSize: number;
  cData: number;
  cFd: number;
  cListening: number;
  cPool: number;
  cAddrText: number;
  cStart: number;
  rSize: number;
  rConnection: number;
  rPool: number;
  rUri: number;
  rMain: number;
  rStartSec: number;
  rStartMsec: number;
  lsSize: number;
  lsAddrText: number;
  lsConnection: number;
  signature: number;
}

export function rootOffsets(L: Layout): RootOffsets {
  return {
    cSize: sizeOf(L, "ngx_connection_t"),
    cData: off(L, "ngx_connection_t", "data"),
    cFd: off(L, "ngx_connection_t", "fd"),
    cListening: off(L, "ngx_connection_t", "listening"),
    cPool: off(L, "ngx_connection_t", "pool"),
    cAddrText: off(L, "ngx_connection_t", "addr_text"),
    cStart: off(L, "ngx_connection_t", "start_time"),
    rSize: sizeOf(L, "ngx_http_request_t"),
    rConnection: off(L, "ngx_http_request_t", "connection"),
    rPool: off(L, "ngx_http_request_t", "pool"),
    rUri: off(L, "ngx_http_request_t", "uri"),
    rMain: off(L, "ngx_http_request_t", "main"),
    rStartSec: off(L, "ngx_http_request_t", "start_sec"),
    rStartMsec: off(L, "ngx_http_request_t", "start_msec"),
    lsSize: sizeOf(L, "ngx_listening_t"),
    lsAddrText: off(L, "ngx_listening_t", "addr_text"),
    lsConnection: off(L, "ngx_listening_t", "connection"),
    signature: L.constants["NGX_HTTP_MODULE"],
  };
}

/** HTTP/2 offsets, when the layout has them (builds with --with-http_v2_module). */
export interface H2Offsets {
  size: number;
  connection: number;
  pool: number;
  dependencies: number;
  qNext: number;
  nodeSize: number;
  nodeQueue: number;
  nodeChildren: number;
  nodeStream: number;
  streamSize: number;
  streamRequest: number;
}

export function h2Offsets(L: Layout): H2Offsets | undefined {
  const h = L.structs["ngx_http_v2_connection_t"];
  const n = L.structs["ngx_http_v2_node_t"];
  const st = L.structs["ngx_http_v2_stream_t"];
  const q = L.structs["ngx_queue_t"];
  if (h === undefined || n === undefined || st === undefined || q === undefined) return undefined;
  const num = (v: unknown) => type(v) === "number";
  if (!num(h.fields["connection"]) || !num(h.fields["pool"]) || !num(h.fields["dependencies"])) return undefined;
  if (!num(n.fields["queue"]) || !num(n.fields["children"]) || !num(n.fields["stream"]) || !num(st.fields["request"])) return undefined;
  if (!num(q.fields["next"])) return undefined;
  return {
    size: h.size,
    connection: h.fields["connection"],
    pool: h.fields["pool"],
    dependencies: h.fields["dependencies"],
    qNext: q.fields["next"],
    nodeSize: n.size,
    nodeQueue: n.fields["queue"],
    nodeChildren: n.fields["children"],
    nodeStream: n.fields["stream"],
    streamSize: st.size,
    streamRequest: st.fields["request"],
  };
}

// once per collection: never hot enough to pay back a trace
noJit(rootOffsets);
noJit(h2Offsets);
