#!/usr/bin/env bash
# The platform matrix: the suites that prove the product, run again against real OpenResty
# and Tengine workers built from the vendor archives (scripts/platform/build.sh, cached).
# Skipped with one line when the archives are absent (a fresh clone without shared/).
#
#   bash scripts/platform/matrix.sh                 both platforms
#   MEMDIAG_PLATFORMS=tengine bash scripts/platform/matrix.sh
# Extra arguments go to jest.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=scripts/platform/paths.sh
. "$HERE/paths.sh"
cd "$ROOT"

VENDOR="$(platform_vendor_dir)"
if [ ! -d "$VENDOR" ]; then
  echo "platform matrix: skipped: no OpenResty/Tengine source archives at $VENDOR (set MEMDIAG_VENDOR_DIR to run it)"
  exit 0
fi

# every layer against ground truth, the layout, rooted pools, the deep scan and the sampler
# with the leak fixture, the push through the platform's websocket client, reloads under load,
# the JIT footprint, and (Tengine) the dyups case study
SUITES=(
  test/integration/agent-basic.test.ts
  test/integration/layout-select.test.ts
  test/integration/regions.test.ts
  test/integration/shm-zones.test.ts
  test/integration/pools-rooted.test.ts
  test/integration/deep-scan-fixture.test.ts
  test/integration/push-basic.test.ts
  test/integration/sampler.test.ts
  test/integration/jit-footprint.test.ts
  test/integration/pid-routing.test.ts
  test/drills/reload.test.ts
  test/platform/
)

rc=0
mkdir -p .tmp
for p in ${MEMDIAG_PLATFORMS:-openresty tengine}; do
  t0=$(date +%s)
  if ! bash "$HERE/build.sh" "$p" >/dev/null; then
    echo "platform matrix: $p: build failed"
    rc=1
    continue
  fi
  t1=$(date +%s)
  results=".tmp/jest-platform-$p.json"
  rm -f "$results"
  MEMDIAG_PLATFORM="$p" MEMDIAG_RELOADS=10 npx jest --runInBand --json --outputFile="$results" "${SUITES[@]}" "$@" || rc=1
  t2=$(date +%s)
  if [ -f "$results" ]; then
    node -e 'const r=require(process.argv[1]); console.log(`platform matrix: ${process.argv[2]}: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped (build ${process.argv[3]} s, tests ${process.argv[4]} s)`)' \
      "$PWD/$results" "$p" $((t1 - t0)) $((t2 - t1))
  fi
done
exit $rc
