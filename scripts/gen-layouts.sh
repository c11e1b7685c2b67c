#!/usr/bin/env bash
# memdiag: generate the struct layout file for the installed nginx build.
#
#   npm run layouts                      # Debian: uses nginx-dev's sources in /usr/share/nginx/src
#   MEMDIAG_NGINX_SRC=/path/to/nginx-1.x.y npm run layouts    # any build: the matching source tree
#
# Environment:
#   MEMDIAG_NGINX       nginx binary to describe (default: /usr/sbin/nginx, else nginx on PATH)
#   MEMDIAG_NGINX_SRC   nginx source tree of exactly that version; configure arguments are taken
#                       from `nginx -V` (dynamic and third-party modules are left out: they do not
#                       change the core structs the agent reads)
#   MEMDIAG_LAYOUTS_DIR output folder (default: <project>/layouts)
#   CC                  C compiler (default: cc)
#
# The layout is keyed by nginx version and md5 of the configure arguments exactly as
# ngx.config.nginx_configure() returns them in a worker. That is the NGX_CONFIGURE macro
# compiled into lua-nginx-module (leading space included): for Debian's dynamically loaded
# module it is the module's configure line, which differs from `nginx -V`. The script reads
# it by loading the module into the binary with `nginx -t` (MEMDIAG_NGINX_MODULES: module dir).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${MEMDIAG_LAYOUTS_DIR:-$ROOT/layouts}"
CC="${CC:-cc}"
NGINX="${MEMDIAG_NGINX:-}"
if [ -z "$NGINX" ]; then
  if [ -x /usr/sbin/nginx ]; then NGINX=/usr/sbin/nginx; else NGINX="$(command -v nginx || true)"; fi
fi
[ -n "$NGINX" ] && [ -x "$NGINX" ] || { echo "gen-layouts: no nginx binary (set MEMDIAG_NGINX)" >&2; exit 1; }
command -v "$CC" >/dev/null || { echo "gen-layouts: no C compiler '$CC' (apt-get install gcc)" >&2; exit 1; }

VINFO="$("$NGINX" -V 2>&1)"
VERSION="$(printf '%s\n' "$VINFO" | sed -n 's|^nginx version: [^/]*/\([0-9.]*\).*|\1|p' | head -n1)"
[ -n "$VERSION" ] || { echo "gen-layouts: cannot read the version from '$NGINX -V'" >&2; exit 1; }
# NGX_CONFIGURE verbatim (starts with a space); the binary prints it after "configure arguments:"
BINARY_CONFIGURE="$(printf '%s\n' "$VINFO" | sed -n 's/^configure arguments://p' | head -n1)"

# The agent keys layouts by md5(ngx.config.nginx_configure()). That function returns the
# NGX_CONFIGURE macro as compiled into lua-nginx-module, which for a dynamically loaded
# module (Debian's libnginx-mod-http-lua) is the *module's* configure line, not the binary's.
# So ask the real thing: load the module into this nginx in a private prefix (single process,
# no server block) and print it from init_by_lua, which runs while the configuration loads
# (before anything listens) and then ends the process. `nginx -t` skips init_by_lua.
MODULES_DIR="${MEMDIAG_NGINX_MODULES:-$(printf '%s\n' "$BINARY_CONFIGURE" | sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p')}"
MODULES_DIR="${MODULES_DIR:-/usr/lib/nginx/modules}"
runtime_configure() {
  local rt out loads=""
  rt="$(mktemp -d "${TMPDIR:-/tmp}/memdiag-rt.XXXXXX")"
  mkdir -p "$rt/logs" "$rt/conf"
  out="$rt/configure.txt"
  if ! printf '%s' "$VINFO" | grep -q 'lua-nginx-module\|lua_module'; then
    [ -f "$MODULES_DIR/ndk_http_module.so" ] && loads="load_module $MODULES_DIR/ndk_http_module.so;"
    [ -f "$MODULES_DIR/ngx_http_lua_module.so" ] && loads="$loads load_module $MODULES_DIR/ngx_http_lua_module.so;"
  fi
  cat >"$rt/conf/nginx.conf" <<CONF
$loads
error_log $rt/logs/error.log;
pid $rt/logs/nginx.pid;
events { worker_connections 16; }
http {
  init_by_lua_block {
    local f = assert(io.open("$out", "w"))
    f:write(ngx.config.nginx_configure())
    f:close()
    os.exit(0)
  }
}
CONF
  if timeout 30 "$NGINX" -p "$rt" -c "$rt/conf/nginx.conf" -g 'daemon off; master_process off;' >"$rt/t.log" 2>&1 && [ -f "$out" ]; then
    cat "$out"
    rm -rf "$rt"
    return 0
  fi
  cat "$rt/t.log" >&2
  rm -rf "$rt"
  return 1
}
if ! CONFIGURE="$(runtime_configure)"; then
  echo "gen-layouts: could not load lua-nginx-module into $NGINX to read ngx.config.nginx_configure() (MEMDIAG_NGINX_MODULES=<dir with ngx_http_lua_module.so>)" >&2
  exit 1
fi
HASH="$(printf '%s' "$CONFIGURE" | md5sum | cut -c1-12)"
ID="$VERSION-$HASH"

ARGS=()
if [ -n "${MEMDIAG_NGINX_SRC:-}" ]; then
  SRC="$MEMDIAG_NGINX_SRC"
  # the configure line is shell-quoted by nginx (--with-cc-opt='-g -O2 ...')
  eval "set -- $BINARY_CONFIGURE"
  for a in "$@"; do
    case "$a" in
      --add-module=*|--add-dynamic-module=*|--with-*=dynamic) echo "gen-layouts: leaving out $a" >&2 ;;
      *) ARGS+=("$a") ;;
    esac
  done
  SOURCE_DESC="$SRC with the configure arguments of $NGINX"
elif [ -f /usr/share/nginx/src/conf_flags ]; then
  SRC=/usr/share/nginx/src
  # shellcheck disable=SC1091
  . /usr/share/nginx/src/conf_flags
  ARGS=("${NGX_CONF_FLAGS[@]}")
  SOURCE_DESC="Debian nginx-dev ($SRC, conf_flags)"
else
  echo "gen-layouts: no nginx sources: install nginx-dev (Debian) or set MEMDIAG_NGINX_SRC=<nginx-$VERSION source dir>" >&2
  exit 1
fi

SRC_VERSION="$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$SRC/src/core/nginx.h")"
if [ "$SRC_VERSION" != "$VERSION" ]; then
  echo "gen-layouts: source tree $SRC is nginx $SRC_VERSION but $NGINX is $VERSION: refusing to guess" >&2
  exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/memdiag-layout.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cp -a "$SRC/auto" "$SRC/src" "$SRC/configure" "$WORK/"
[ -d "$SRC/conf" ] && cp -a "$SRC/conf" "$WORK/" || mkdir -p "$WORK/conf"
[ -d "$SRC/html" ] && cp -a "$SRC/html" "$WORK/"
[ -d "$SRC/man" ] && cp -a "$SRC/man" "$WORK/"

echo "gen-layouts: configuring nginx $VERSION from $SOURCE_DESC" >&2
if ! (cd "$WORK" && ./configure "${ARGS[@]}" >"$WORK/configure.log" 2>&1); then
  tail -n 30 "$WORK/configure.log" >&2
  echo "gen-layouts: configure failed (Debian: apt-get install libpcre3-dev libssl-dev zlib1g-dev)" >&2
  exit 1
fi

# the build's own include path and compiler flags (defines from --with-cc-opt matter; -Werror does not)
cat >"$WORK/print.mk" <<'MK'
memdiag_print_flags:
	@echo '$(ALL_INCS)'
	@echo '$(CFLAGS)'
MK
FLAGS="$(cd "$WORK" && make -s -f objs/Makefile -f print.mk memdiag_print_flags)"
INCS="$(printf '%s\n' "$FLAGS" | sed -n 1p)"
CFLAGS="$(printf '%s\n' "$FLAGS" | sed -n 2p | sed -e 's/-Werror[^ ]*//g' -e 's/-ffile-prefix-map=[^ ]*//g')"

# shellcheck disable=SC2086
(cd "$WORK" && "$CC" $CFLAGS -Wno-error $INCS -o "$WORK/probe" "$ROOT/scripts/layout-probe.c")
"$WORK/probe" >"$WORK/probe.json"

mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/$ID.json"
MEMDIAG_ID="$ID" MEMDIAG_VERSION="$VERSION" MEMDIAG_HASH="$HASH" MEMDIAG_CONFIGURE="$CONFIGURE" MEMDIAG_BINARY_CONFIGURE="$BINARY_CONFIGURE" \
MEMDIAG_SOURCE="$SOURCE_DESC" MEMDIAG_CC="$("$CC" --version | head -n1)" \
node -e '
  const fs = require("fs");
  const probe = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  const e = process.env;
  const out = {
    id: e.MEMDIAG_ID,
    nginx_version: e.MEMDIAG_VERSION,
    configure_hash: e.MEMDIAG_HASH,
    configure: e.MEMDIAG_CONFIGURE,
    binary_configure: e.MEMDIAG_BINARY_CONFIGURE,
    generated_by: "scripts/gen-layouts.sh (offsetof probe scripts/layout-probe.c)",
    source: e.MEMDIAG_SOURCE,
    compiler: e.MEMDIAG_CC,
    arch: process.arch,
    structs: probe.structs,
    constants: probe.constants,
  };
  fs.writeFileSync(process.argv[2], JSON.stringify(out, null, 2) + "\n");
' "$WORK/probe.json" "$OUT"
echo "$OUT"
