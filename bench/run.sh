#!/usr/bin/env bash
# Benchmarks, one command each: `npm run bench` runs all, `bash bench/run.sh collect-cost` one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
npx tstl -p tstl.json >/dev/null
npx tsc -p bench/tsconfig.json
npx tsc -p tsconfig.json   # control plane (dist/control-plane/src/cli.js) for the ingest benchmark
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(collect-cost ingest deep-scan)
for b in "${names[@]}"; do
  echo "== $b"
  node "dist/bench/$b.js"
done
