/**
 * The snapshot schema (schema/snapshot.v1.schema.json) compiled once; used by the
 * control plane on every incoming frame and by the agent's tests.
 */
import Ajv2020 from "ajv/dist/2020";
import * as fs from "fs";
import * as path from "path";

export const SNAPSHOT_SCHEMA_VERSION = 1;

function findSchema(): string {
  let d = __dirname;
  for (let i = 0; i < 5; i++) {
    const f = path.join(d, "schema", "snapshot.v1.schema.json");
    if (fs.existsSync(f)) return f;
    const g = path.join(d, "snapshot.v1.schema.json");
    if (fs.existsSync(g)) return g;
    d = path.dirname(d);
  }
  throw new Error("snapshot.v1.schema.json not found");
}

export const snapshotSchema = JSON.parse(fs.readFileSync(findSchema(), "utf8"));
const ajv = new Ajv2020({ allErrors: false, strict: false });
const validateFn = ajv.compile(snapshotSchema);

export interface Validation {
  ok: boolean;
  error?: string;
}

export function validateSnapshot(s: unknown): Validation {
  if (validateFn(s)) return { ok: true };
  const e = validateFn.errors?.[0];
  return { ok: false, error: e ? `${e.instancePath || "/"} ${e.message}` : "invalid snapshot" };
}
