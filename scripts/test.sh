#!/usr/bin/env bash
# The one test command (README): installs what is missing, builds, runs every test.
# Extra arguments go to jest (e.g. a file pattern).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
bash scripts/ensure-npm.sh
# integration tests start real nginx instances; on 2 cores they run one file at a time
exec npx jest --runInBand "$@"
