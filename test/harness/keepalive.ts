import * as net from "net";

/**
 * Open n keepalive connections to 127.0.0.1:port, each with one request to the harness's /ok
 * location answered, and leave them open (pushed to `into`, which the caller destroys). Opened
 * 250 at a time, to stay under the listen backlog.
 */
export async function openKeepalive(port: number, n: number, into: net.Socket[]): Promise<void> {
  const BATCH = 250;
  for (let done = 0; done < n; done += BATCH) {
    await Promise.all(
      Array.from({ length: Math.min(BATCH, n - done) }, () =>
        new Promise<void>((resolve, reject) => {
          const s = net.connect(port, "127.0.0.1", () => s.write("GET /ok HTTP/1.1\r\nHost: k\r\n\r\n"));
          let got = "";
          s.on("data", (d) => {
            got += d.toString();
            if (got.includes("ok\n")) resolve();
          });
          s.on("error", reject);
          into.push(s);
        }),
      ),
    );
  }
}
