#!/usr/bin/env bash
# Builds the agent's optional native helpers with the system C compiler:
#   lua-src/native/sampler.c -> build/native/libmemdiag_sampler.so
# The agent works without them (the sampler then reports "unavailable").
# Called by `npm run build` (build:native). Skips up-to-date outputs.
# MEMDIAG_SKIP_NATIVE=1 skips; a missing compiler is a warning, not a failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/lua-src/native/sampler.c"
OUT_DIR="$ROOT/build/native"
OUT="$OUT_DIR/libmemdiag_sampler.so"
CC="${CC:-cc}"

if [[ "${MEMDIAG_SKIP_NATIVE:-0}" == 1 ]]; then
  echo "build-native: skipped (MEMDIAG_SKIP_NATIVE=1); the allocation sampler will be unavailable" >&2
  exit 0
fi
if ! command -v "$CC" >/dev/null 2>&1; then
  echo "build-native: no C compiler ($CC) found; the allocation sampler will be unavailable (apt-get install gcc)" >&2
  exit 0
fi
if [[ -f "$OUT" && ! "$SRC" -nt "$OUT" && ! "${BASH_SOURCE[0]}" -nt "$OUT" && "${1:-}" != "--force" ]]; then
  exit 0
fi
mkdir -p "$OUT_DIR"
TMP="$OUT.tmp.$$"
trap 'rm -f "$TMP"' EXIT
"$CC" -std=gnu11 -O2 -g -fPIC -shared -fvisibility=hidden -fno-omit-frame-pointer \
  -Wall -Wextra -Wno-unused-parameter -Werror \
  -Wl,-z,relro -Wl,-z,now -Wl,-z,nodelete -Wl,--build-id \
  -o "$TMP" "$SRC" -pthread -ldl -lm
mv -f "$TMP" "$OUT"
echo "build-native: built $OUT"
