/** `npm run configure`: memdiag.config.json → nginx-conf/memdiag.conf */
import * as fs from "fs";
import * as path from "path";
import { agentOptions, checkExposure, configPath, exposureWarnings, loadConfig, ROOT } from "./config";
import { renderConf } from "./render-conf";

function main(): void {
  const cfg = loadConfig();
  const problems = checkExposure(cfg);
  if (problems.length > 0) {
    for (const p of problems) console.error(`memdiag configure: ${p}`);
    process.exit(1);
  }
  for (const w of exposureWarnings(cfg)) console.error(`memdiag configure: warning: ${w}`);
  const out = path.join(ROOT, "nginx-conf", "memdiag.conf");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, renderConf({ listen: cfg.listen, dictSize: cfg.dict_size, agent: agentOptions(cfg) }));
  const src = fs.existsSync(configPath()) ? configPath() : "defaults";
  console.log(`memdiag: wrote ${out} (from ${src}); add "include ${out};" inside http {} and reload nginx`);
}

main();
