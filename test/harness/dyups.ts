/**
 * A Tengine worker with the dynamic-upstream case study's configuration (scripts/demo/dyups.ts):
 * one worker, a backend on a free port, the dyups interface on another; started, with its first
 * snapshot taken.
 */
import { Nginx } from "./nginx";
import { freePort } from "./ports";
import { dyupsConf } from "../../scripts/demo/dyups";

export interface DyupsNginx {
  ngx: Nginx;
  backendPort: number;
  dyupsPort: number;
}

export async function startDyups(): Promise<DyupsNginx> {
  const backendPort = await freePort();
  const dyupsPort = await freePort();
  const c = dyupsConf(backendPort, dyupsPort);
  const ngx = new Nginx({ workers: 1, http: c.http, appLocations: c.appLocations });
  await ngx.start();
  await ngx.snapshots();
  return { ngx, backendPort, dyupsPort };
}
