#!/usr/bin/env bash
# memdiag: generate the struct layout file for an nginx build (Debian, OpenResty, Tengine, ...).
#
#   npm run layouts                                   # Debian: nginx-dev's sources in /usr/share/nginx/src
#   MEMDIAG_NGINX=/usr/local/openresty/nginx/sbin/nginx \
#   MEMDIAG_NGINX_SRC=/path/to/openresty-1.25.3.1 npm run layouts     # your own build and its sources
#
# Environment:
#   MEMDIAG_NGINX       the nginx binary to describe (default: `nginx`, then `openresty` on PATH,
#                       then /usr/sbin/nginx)
#   MEMDIAG_NGINX_SRC   the source tree of exactly that version: an nginx or Tengine tree, with or
#                       without ./configure (release tarball or git layout with auto/configure), or
#                       an OpenResty release tree (its bundle/nginx-* is used). The configure
#                       arguments come from `nginx -V`; modules (--add-module, dynamic) are left out:
#                       they do not change the core structs the agent reads.
#   MEMDIAG_LUA_PATH    where resty.core is, as in your nginx.conf's lua_package_path
#                       (e.g. '/usr/local/openresty/lualib/?.lua'); found by itself in the usual places
#   MEMDIAG_NGINX_MODULES  folder with ngx_http_lua_module.so when the lua module is loaded dynamically
#   MEMDIAG_LAYOUTS_DIR output folder (default: <project>/layouts)
#   CC                  C compiler (default: cc)
#
# The layout is keyed by nginx core version and md5 of the configure arguments exactly as
# ngx.config.nginx_configure() returns them in a worker. That is the NGX_CONFIGURE macro
# compiled into lua-nginx-module (leading space included): for Debian's dynamically loaded
# module it is the module's configure line, which differs from `nginx -V`. The script reads
# it (and the core version, which OpenResty and Tengine print differently) from the binary
# itself, by running its Lua once in a private prefix.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${MEMDIAG_LAYOUTS_DIR:-$ROOT/layouts}"
CC="${CC:-cc}"
NGINX="${MEMDIAG_NGINX:-}"
if [ -z "$NGINX" ]; then
  NGINX="$(command -v nginx || command -v openresty || true)"
  [ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
fi
[ -n "$NGINX" ] && [ -x "$NGINX" ] || { echo "gen-layouts: no nginx binary found: set MEMDIAG_NGINX=/path/to/sbin/nginx" >&2; exit 1; }
command -v "$CC" >/dev/null || { echo "gen-layouts: no C compiler '$CC' (apt-get install gcc)" >&2; exit 1; }
echo "gen-layouts: describing $NGINX (MEMDIAG_NGINX selects another binary)" >&2

VINFO="$("$NGINX" -V 2>&1)"
# NGX_CONFIGURE verbatim (starts with a space); the binary prints it after "configure arguments:"
BINARY_CONFIGURE="$(printf '%s\n' "$VINFO" | sed -n 's/^configure arguments://p' | head -n1)"

# Where resty.core lives: lua-nginx-module >= 0.10.16 refuses to start without it.
lua_path_guess() {
  local bin_dir d
  bin_dir="$(cd "$(dirname "$(readlink -f "$NGINX")")" && pwd)"
  for d in "$bin_dir/../../lualib" "$bin_dir/../lualib" /usr/local/openresty/lualib /usr/share/lua/5.1 \
           /usr/local/share/lua/5.1 /usr/local/lib/lua /usr/local/lib/lua/5.1; do
    if [ -f "$d/resty/core.lua" ]; then echo "$(cd "$d" && pwd)/?.lua"; return 0; fi
  done
  return 0
}
LUA_PATH_FOR_PROBE="${MEMDIAG_LUA_PATH:-$(lua_path_guess)}"

# The agent keys layouts by md5(ngx.config.nginx_configure()). That function returns the
# NGX_CONFIGURE macro as compiled into lua-nginx-module, which for a dynamically loaded
# module (Debian's libnginx-mod-http-lua) is the *module's* configure line, not the binary's.
# So ask the real thing: run this nginx in a private prefix (single process, no server
# block) and print it from init_by_lua, which runs while the configuration loads (before
# anything listens) and then ends the process. `nginx -t` skips init_by_lua.
MODULES_DIR="${MEMDIAG_NGINX_MODULES:-$(printf '%s\n' "$BINARY_CONFIGURE" | sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p')}"
MODULES_DIR="${MODULES_DIR:-/usr/lib/nginx/modules}"
PROBE_LOG=""
runtime_facts() {
  local rt out loads="" lpath=""
  rt="$(mktemp -d "${TMPDIR:-/tmp}/memdiag-rt.XXXXXX")"
  mkdir -p "$rt/logs" "$rt/conf"
  out="$rt/facts.txt"
  if ! printf '%s' "$VINFO" | grep -q 'lua-nginx-module\|lua_module\|ngx_lua'; then
    [ -f "$MODULES_DIR/ndk_http_module.so" ] && loads="load_module $MODULES_DIR/ndk_http_module.so;"
    [ -f "$MODULES_DIR/ngx_http_lua_module.so" ] && loads="$loads load_module $MODULES_DIR/ngx_http_lua_module.so;"
  fi
  [ -n "$LUA_PATH_FOR_PROBE" ] && lpath="lua_package_path \"$LUA_PATH_FOR_PROBE;;\";"
  cat >"$rt/conf/nginx.conf" <<CONF
$loads
error_log $rt/logs/error.log;
pid $rt/logs/nginx.pid;
events { worker_connections 16; }
http {
  $lpath
  init_by_lua_block {
    local f = assert(io.open("$out", "w"))
    f:write(ngx.config.nginx_version, "\n", ngx.config.nginx_configure())
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
  cat "$rt/t.log" "$rt/logs/error.log" 2>/dev/null >&2 || true
  if grep -q "resty.core" "$rt/t.log" "$rt/logs/error.log" 2>/dev/null; then
    echo "gen-layouts: $NGINX could not load resty.core${LUA_PATH_FOR_PROBE:+ from '$LUA_PATH_FOR_PROBE'}: set MEMDIAG_LUA_PATH to the lua_package_path entry of the folder holding resty/core.lua (e.g. MEMDIAG_LUA_PATH='/usr/local/openresty/lualib/?.lua')" >&2
  elif grep -q 'unknown directive "init_by_lua_block"\|unknown directive "lua_package_path"' "$rt/t.log" "$rt/logs/error.log" 2>/dev/null; then
    echo "gen-layouts: $NGINX has no lua-nginx-module: set MEMDIAG_NGINX_MODULES to the folder with ngx_http_lua_module.so and ndk_http_module.so" >&2
  else
    echo "gen-layouts: could not run Lua in $NGINX to read ngx.config.nginx_configure() (see the log above)" >&2
  fi
  rm -rf "$rt"
  return 1
}
FACTS="$(runtime_facts)" || exit 1
VERSION_NUM="$(printf '%s\n' "$FACTS" | sed -n 1p)"
CONFIGURE="$(printf '%s\n' "$FACTS" | sed -n '2,$p')"
# the nginx core version (OpenResty says openresty/1.25.3.1, Tengine prints its own version first)
VERSION="$((VERSION_NUM / 1000000)).$((VERSION_NUM / 1000 % 1000)).$((VERSION_NUM % 1000))"
HASH="$(printf '%s' "$CONFIGURE" | md5sum | cut -c1-12)"
ID="$VERSION-$HASH"

ARGS=()
if [ -n "${MEMDIAG_NGINX_SRC:-}" ]; then
  SRC="$MEMDIAG_NGINX_SRC"
  [ -d "$SRC" ] || { echo "gen-layouts: MEMDIAG_NGINX_SRC=$SRC is not a folder" >&2; exit 1; }
  if [ ! -f "$SRC/src/core/nginx.h" ]; then
    # an OpenResty release tree: its nginx sits in bundle/nginx-<version>
    B="$(ls -d "$SRC"/bundle/nginx-* 2>/dev/null | head -n1 || true)"
    [ -n "$B" ] || { echo "gen-layouts: $SRC has no src/core/nginx.h (nor bundle/nginx-*/): point MEMDIAG_NGINX_SRC at the unpacked nginx, Tengine or OpenResty source tarball of $VERSION" >&2; exit 1; }
    SRC="$B"
  fi
  # the configure line is shell-quoted by nginx (--with-cc-opt='-g -O2 ...')
  eval "set -- $BINARY_CONFIGURE"
  for a in "$@"; do
    case "$a" in
      --add-module=*|--add-dynamic-module=*|--with-*=dynamic) echo "gen-layouts: leaving out $a" >&2 ;;
      # sources of bundled libraries on the build machine: the probe needs only their headers
      --with-openssl=*|--with-pcre=*|--with-zlib=*|--with-libatomic=*) echo "gen-layouts: leaving out $a (system headers are used)" >&2 ;;
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

SRC_VERSION_NUM="$(sed -n 's/^#define nginx_version *\([0-9]*\).*/\1/p' "$SRC/src/core/nginx.h")"
if [ "$SRC_VERSION_NUM" != "$VERSION_NUM" ]; then
  SRC_VERSION="$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$SRC/src/core/nginx.h")"
  echo "gen-layouts: source tree $SRC is nginx $SRC_VERSION but $NGINX is nginx $VERSION: point MEMDIAG_NGINX_SRC at the $VERSION sources" >&2
  exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/memdiag-layout.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cp -a "$SRC/auto" "$SRC/src" "$WORK/"
# release tarballs have ./configure; the upstream git layout only auto/configure (same script)
CONFIGURE_SCRIPT=auto/configure
[ -f "$SRC/configure" ] && { cp -a "$SRC/configure" "$WORK/"; CONFIGURE_SCRIPT=./configure; }
[ -d "$SRC/modules" ] && cp -a "$SRC/modules" "$WORK/"   # Tengine: configure reads its bundled modules' config
[ -d "$SRC/conf" ] && cp -a "$SRC/conf" "$WORK/" || mkdir -p "$WORK/conf"
[ -d "$SRC/html" ] && cp -a "$SRC/html" "$WORK/"
[ -d "$SRC/man" ] && cp -a "$SRC/man" "$WORK/"

echo "gen-layouts: configuring nginx $VERSION from $SOURCE_DESC" >&2
if ! (cd "$WORK" && "$CONFIGURE_SCRIPT" "${ARGS[@]}" >"$WORK/configure.log" 2>&1); then
  tail -n 30 "$WORK/configure.log" >&2
  echo "gen-layouts: configure failed in a copy of $SRC (Debian: apt-get install libpcre3-dev libpcre2-dev libssl-dev zlib1g-dev)" >&2
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
