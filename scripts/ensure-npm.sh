#!/usr/bin/env bash
# npm packages and the build (npm ci runs `prepare`, which builds agent, control plane and the include file).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run --silent build
fi
