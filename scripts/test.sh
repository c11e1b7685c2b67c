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
  bash scripts/platform/matrix.sh || rc=1
fi
exit $rc
