#!/usr/bin/env bash
# Failure drills, hostile input and the soak, alone:  npm run drill [-- <jest file pattern>]
#   MEMDIAG_DRILL_FULL=1      full counts (50 reloads, 1,000 corrupted pools, 10 control-plane kills, ...)
#   MEMDIAG_SOAK_SECONDS=1800 the real soak (default 60)
#   MEMDIAG_DRILL_SEED=N      replay the random choices of an earlier run (every drill prints its seed)
# Prints at the end how many cases were tried and how many the system survived.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
bash scripts/ensure-npm.sh
mkdir -p .tmp
export MEMDIAG_DRILL_TALLY="$PWD/.tmp/drill-tally.jsonl"
rm -f "$MEMDIAG_DRILL_TALLY"
set +e
npx jest --runInBand "$@" --selectProjects drills
rc=$?
set -e
node -e '
const fs = require("fs");
const f = process.argv[1];
const rows = fs.existsSync(f) ? fs.readFileSync(f, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
let tried = 0, survived = 0;
console.log("\ndrill cases (tried / survived):");
for (const r of rows) {
  tried += r.tried; survived += r.survived;
  console.log(`  ${r.survived === r.tried ? "ok  " : "FAIL"} ${r.drill.padEnd(44)} ${String(r.survived).padStart(5)} / ${String(r.tried).padEnd(5)} ${r.note}`);
}
console.log(`drills: ${tried} cases tried, ${survived} survived${tried === survived ? "" : `, ${tried - survived} FAILED`}`);
' "$MEMDIAG_DRILL_TALLY"
exit $rc
