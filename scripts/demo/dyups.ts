/**
 * Tengine's dynamic-upstream module (ngx_http_upstream_dyups_module) under a pattern of
 * upstream updates seen in service-discovery setups: the same upstream re-posted again and
 * again (every endpoint change) with a consistent-hash balancer over many servers and
 * keepalive connections to the backends. Used by the Tengine demo (`npm run demo -- --platform
 * tengine`) and its test (test/platform/tengine-dyups.test.ts).
 */
import * as http from "http";

/** servers per upstream version: the consistent-hash ring gets 160 points per server */
export const DYUPS_SERVERS = 150;
/** the ring: 160 points of 16 bytes per server (ngx_http_upstream_chash_point_t), one allocation */
export const DYUPS_RING_BYTES = DYUPS_SERVERS * 160 * 16;
/** the pool ngx_dyups_init_upstream creates for each upstream version */
export const DYUPS_POOL_SIZE = 512;

/** nginx.conf pieces: a backend server, the dyups interface, and the application's proxy location. */
export function dyupsConf(backendPort: number, dyupsPort: number): { http: string; appLocations: string } {
  return {
    http: `
  server {
    listen 127.0.0.1:${backendPort};
    keepalive_timeout 3600s;
    keepalive_requests 1000000;
    location / { return 200 "backend\\n"; }
  }
  server {
    listen 127.0.0.1:${dyupsPort};
    location / { dyups_interface; }
  }`,
    // $request_uri is the hash key: referencing it here gives it an index at configuration
    // time, which the upstream parsed at run time by dyups needs
    appLocations: `
    location /svc/ {
        set $ups svc;
        set $hash_key $request_uri;
        proxy_pass http://$ups;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }`,
  };
}

/** The upstream body dyups parses: consistent hash, DYUPS_SERVERS servers, upstream keepalive unless told not to. */
export function dyupsBody(backendPort: number, keepalive = true): string {
  const servers = Array.from({ length: DYUPS_SERVERS }, () => `server 127.0.0.1:${backendPort} max_fails=0;`).join(" ");
  return `hash $request_uri consistent; ${keepalive ? "keepalive 4; keepalive_timeout 3600s; " : ""}${servers}`;
}

function request(port: number, path: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : { "Content-Length": Buffer.byteLength(body) };
    const req = http.request({ host: "127.0.0.1", port, path, method: body === undefined ? "GET" : "POST", agent: false, headers, timeout: 10000 }, (res) => {
      let b = "";
      res.on("data", (d) => (b += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    req.on("timeout", () => req.destroy(new Error(`${path} timed out`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** One update (the upstream re-posted) followed by `requests` proxied requests through it. */
export async function dyupsUpdate(dyupsPort: number, appPort: number, backendPort: number, requests = 2, keepalive = true): Promise<void> {
  const r = await request(dyupsPort, "/upstream/svc", dyupsBody(backendPort, keepalive));
  if (r.status !== 200) throw new Error(`dyups update: ${r.status} ${r.body}`);
  for (let i = 0; i < requests; i++) {
    const p = await request(appPort, `/svc/item-${i}`);
    if (p.status !== 200) throw new Error(`proxied request: ${p.status}`);
  }
}
