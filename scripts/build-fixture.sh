#!/usr/bin/env bash
# Builds the leak fixture (test/fixtures/leaky_upstream) as a dynamic module that
# the packaged nginx (/usr/sbin/nginx, --with-compat) loads, against the exact
# nginx sources Debian ships in nginx-dev (/usr/share/nginx/src); with
# MEMDIAG_PLATFORM=openresty|tengine, against that platform's source tree and
# configure line instead (scripts/platform/build.sh, built first if needed).
#
#   bash scripts/build-fixture.sh          build if out of date
#   bash scripts/build-fixture.sh --force  always rebuild
#
# Output: test/fixtures/leaky_upstream/build/[<platform>/]ngx_http_leaky_upstream_module.so
# (with -g, not stripped). Safe to run concurrently (flock).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME=ngx_http_leaky_upstream_module
FIX_DIR="$ROOT/test/fixtures/leaky_upstream"
OUT_DIR="$FIX_DIR/build"
NGX_SRC="${NGX_SRC:-/usr/share/nginx/src}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

die() { echo "build-fixture: $*" >&2; exit 1; }

PLATFORM="${MEMDIAG_PLATFORM:-debian}"
if [[ "$PLATFORM" != debian ]]; then
  PREFIX="$(bash "$ROOT/scripts/platform/build.sh" "$PLATFORM")" || die "platform $PLATFORM could not be built"
  NGX_SRC="$PREFIX/src/nginx"
  CONF_FLAGS="$PREFIX/configure.args"
  OUT_DIR="$FIX_DIR/build/$PLATFORM"
else
  if [[ ! -f "$NGX_SRC/conf_flags" || ! -x "$NGX_SRC/configure" ]]; then
    die "nginx sources not found in $NGX_SRC (conf_flags, configure). Install them: apt-get install nginx-dev libpcre3-dev libssl-dev zlib1g-dev"
  fi
  CONF_FLAGS="$NGX_SRC/conf_flags"
fi
OUT="$OUT_DIR/$NAME.so"
command -v cc >/dev/null || die "no C compiler (cc) found: apt-get install gcc"

mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/.lock"
flock 9

up_to_date() {
  [[ -f "$OUT" ]] || return 1
  local f
  for f in "$FIX_DIR/config" "$FIX_DIR/$NAME.c" "${BASH_SOURCE[0]}" "$CONF_FLAGS"; do
    [[ "$f" -nt "$OUT" ]] && return 1
  done
  return 0
}

if [[ $FORCE == 0 ]] && up_to_date; then
  exit 0
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/memdiag-fixture-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
if [[ "$PLATFORM" != debian ]]; then
  # the platform's own configure line, without its static modules: a --with-compat dynamic
  # module needs the same core configuration, not the same module list
  mkdir -p "$TMP/nginx"
  cp -a "$NGX_SRC/." "$TMP/nginx/"
  cd "$TMP/nginx"
  NGX_CONF_FLAGS=()
  while IFS= read -r a; do
    case "$a" in --add-module=*|--with-cc-opt=*) ;; *) NGX_CONF_FLAGS+=("$a") ;; esac
  done <"$CONF_FLAGS"
  CONFIGURE=auto/configure
  [[ -x ./configure ]] && CONFIGURE=./configure
else
  cp -a "$NGX_SRC/." "$TMP/"
  cd "$TMP"
  # shellcheck disable=SC1091
  source ./conf_flags   # defines NGX_CONF_FLAGS (the package's configure arguments)
  CONFIGURE=./configure
fi

# -g: symbols for call paths; no sibling-call optimisation and frame pointers so
# that every fixture function shows up in backtraces.
CC_OPT="-g -O2 -fPIC -fno-omit-frame-pointer -fno-optimize-sibling-calls -Wno-error"
if ! "$CONFIGURE" "${NGX_CONF_FLAGS[@]}" --with-cc-opt="$CC_OPT" --with-ld-opt="-Wl,-z,relro -Wl,-z,now" \
     --add-dynamic-module="$FIX_DIR" >"$TMP/configure.log" 2>&1; then
  tail -n 30 "$TMP/configure.log" >&2
  die "configure failed (missing libpcre3-dev libssl-dev zlib1g-dev?)"
fi
if ! make -f objs/Makefile modules >"$TMP/make.log" 2>&1; then
  tail -n 40 "$TMP/make.log" >&2
  die "make modules failed"
fi
[[ -f "objs/$NAME.so" ]] || die "objs/$NAME.so was not produced"
cp "objs/$NAME.so" "$OUT.tmp.$$"
mv -f "$OUT.tmp.$$" "$OUT"
echo "build-fixture: built $OUT"
