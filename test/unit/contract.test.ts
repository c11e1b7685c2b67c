import * as fs from "fs";
import * as path from "path";
import { AGENT_VERSION, SCHEMA_VERSION } from "../../lua-src/memdiag/contract/version";

const ROOT = path.join(__dirname, "..", "..");

/** The versions that live outside the contract module (package.json, the JSON schema) agree with it. */
test("package.json and the snapshot schema carry the contract's versions", () => {
  expect(JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")).version).toBe(AGENT_VERSION);
  const schema = JSON.parse(fs.readFileSync(path.join(ROOT, "schema", `snapshot.v${SCHEMA_VERSION}.schema.json`), "utf8"));
  expect(schema.properties.schema.const).toBe(SCHEMA_VERSION);
});
