#!/usr/bin/env bash
# The one test command (README): installs what is missing, builds, runs every test.
# Extra arguments go to jest (e.g. a file pattern).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
bash scripts/ensure-npm.sh
mkdir -p .tmp
results=.tmp/jest-results.json
rm -f "$results"
# integration tests start real nginx instances; on 2 cores they run one file at a time
set +e
npx jest --runInBand --json --outputFile="$results" --selectProjects unit integration drills "$@"
rc=$?
set -e
# one plain closing line that any CI reader understands
if [ -f "$results" ]; then
  node -e 'const r=require(process.argv[1]); console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped`)' "$PWD/$results"
fi
# the same product suites against real OpenResty and Tengine workers (skipped without the
# vendor archives; not when a file pattern narrowed the run)
if [ $# -eq 0 ]; then
  rm -f .tmp/jest-platform-*.json
  bash scripts/platform/matrix.sh || rc=1
  # the last line counts every test of this run, the matrix included
  node -e '
    const fs = require("fs");
    const t = { p: 0, f: 0, s: 0 };
    for (const f of process.argv.slice(1)) {
      if (!fs.existsSync(f)) continue;
      const r = JSON.parse(fs.readFileSync(f, "utf8"));
      t.p += r.numPassedTests; t.f += r.numFailedTests; t.s += r.numPendingTests;
    }
    console.log(`all tests: ${t.p} passed, ${t.f} failed, ${t.s} skipped`);
  ' "$results" .tmp/jest-platform-openresty.json .tmp/jest-platform-tengine.json
fi
exit $rc
