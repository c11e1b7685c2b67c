#!/usr/bin/env bash
# Builds a real gateway platform from the pristine upstream archives in shared/vendor,
# the way its users get it, into a cache outside the project tree, and prints the
# install prefix on stdout (progress goes to stderr).
#
#   npm run platform -- openresty      OpenResty 1.25.3.1-equivalent
#   npm run platform -- tengine        Tengine 3.1.0 (+ lua module, ndk, dyups)
#   bash scripts/platform/build.sh <name> [--force]
#
# Environment:
#   MEMDIAG_VENDOR_DIR     the archives (default: <project>/../shared/vendor)
#   MEMDIAG_PLATFORM_CACHE the cache (default: ${XDG_CACHE_HOME:-$HOME/.cache}/memdiag/platforms)
#
# A build lives in <cache>/<name>-<hash>, where the hash covers the archives it uses and
# these scripts: it is reused while they are unchanged and built again when one changes.
# Layout of a build: nginx/sbin/nginx, luajit/ (shared libluajit, found through rpath),
# lualib/ (lua-resty-core, lrucache, websocket, cjson.so), src/nginx (the patched,
# unconfigured source tree the binary was built from), platform.env (the facts tests use).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=scripts/platform/paths.sh
. "$HERE/paths.sh"

NAME="${1:-}"
FORCE=0
[ "${2:-}" = "--force" ] && FORCE=1
die() { echo "platform: $*" >&2; exit 1; }
say() { echo "platform[$NAME]: $*" >&2; }

case "$NAME" in
  openresty)
    NGINX_TAR=nginx-1.25.3.tar.gz
    LUA_CORE_TAR=lua-resty-core-0.1.28.tar.gz
    EXTRA_TARS=(openresty-1.25.3.1-patches-and-scripts.tar.gz lua-nginx-module-0.10.26.tar.gz)
    ;;
  tengine)
    NGINX_TAR=tengine-3.1.0.tar.gz
    LUA_CORE_TAR=lua-resty-core-0.1.27.tar.gz
    EXTRA_TARS=()
    ;;
  *) die "usage: npm run platform -- openresty|tengine" ;;
esac
COMMON_TARS=(luajit2-2.1-20231117.tar.gz ngx_devel_kit-0.3.3.tar.gz lua-resty-lrucache-0.13.tar.gz lua-resty-websocket-0.11.tar.gz lua-cjson-2.1.0.13.tar.gz)
TARS=("$NGINX_TAR" "$LUA_CORE_TAR" "${EXTRA_TARS[@]}" "${COMMON_TARS[@]}")

VENDOR="$(platform_vendor_dir)"
[ -d "$VENDOR" ] || die "no vendor archives at $VENDOR (set MEMDIAG_VENDOR_DIR)"
for t in "${TARS[@]}"; do [ -f "$VENDOR/$t" ] || die "missing $VENDOR/$t"; done
for tool in cc make patch; do
  command -v "$tool" >/dev/null || die "no '$tool': bash scripts/install-deps.sh platform"
done

KEY="$( { for t in "${TARS[@]}"; do sha256sum "$VENDOR/$t" | cut -d' ' -f1; done
          cat "$HERE/build.sh" "$HERE/openresty-patches.js" "$HERE/paths.sh"; } | sha256sum | cut -c1-12)"
CACHE="$(platform_cache_dir)"
mkdir -p "$CACHE"
P="$CACHE/$NAME-$KEY"

exec 8>"$CACHE/$NAME.lock"
flock 8
if [ $FORCE = 0 ] && [ -f "$P/platform.env" ]; then
  echo "$P"
  exit 0
fi
# The install prefix is compiled into the binary (rpath, lua paths), so it builds in place;
# platform.env, written last, marks a complete build.
rm -rf "$P"
STAGE="$P"
mkdir -p "$STAGE"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/memdiag-platform-$NAME.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
JOBS="${MEMDIAG_PLATFORM_JOBS:-$(nproc)}"
untar() { tar -xzf "$VENDOR/$1" -C "$WORK"; tar -tzf "$VENDOR/$1" | awk -F/ 'NR == 1 { print $1 }'; }
run() { # run <log name> <cmd...>: quiet unless it fails
  local log="$WORK/$1.log"; shift
  if ! "$@" >"$log" 2>&1; then tail -n 40 "$log" >&2; die "failed: $*"; fi
}

# LuaJIT as OpenResty builds it: Lua 5.2 compat, shared library, rpath from nginx
LJ_SRC="$WORK/$(untar luajit2-2.1-20231117.tar.gz)"
say "LuaJIT"
run luajit make -C "$LJ_SRC" -j"$JOBS" PREFIX="$P/luajit" CC=cc XCFLAGS='-DLUAJIT_NUMMODE=2 -DLUAJIT_ENABLE_LUA52COMPAT'
run luajit-install make -C "$LJ_SRC" install PREFIX="$P/luajit"
LUAJIT_INC_DIR="$(ls -d "$STAGE"/luajit/include/luajit-2.1)"

# Lua libraries on the lua paths: resty.core (the version matching the lua module), lrucache, websocket, cjson
mkdir -p "$STAGE/lualib"
for t in "$LUA_CORE_TAR" lua-resty-lrucache-0.13.tar.gz lua-resty-websocket-0.11.tar.gz; do
  d="$WORK/$(untar "$t")"
  cp -a "$d/lib/." "$STAGE/lualib/"
done
CJ_SRC="$WORK/$(untar lua-cjson-2.1.0.13.tar.gz)"
run cjson make -C "$CJ_SRC" CC=cc LUA_INCLUDE_DIR="$LUAJIT_INC_DIR" cjson.so
cp "$CJ_SRC/cjson.so" "$STAGE/lualib/"

NDK_SRC="$WORK/$(untar ngx_devel_kit-0.3.3.tar.gz)"
NGX_SRC="$WORK/$(untar "$NGINX_TAR")"
# Symbols stay (nginx links with -E): the call paths memdiag shows name nginx functions.
CC_OPT="-g -O2"
# The configure line is what layouts are keyed by (md5 of NGX_CONFIGURE), so it holds no
# path of this machine: modules by relative path as in OpenResty's bundle, the packages'
# default prefix, LuaJIT's rpath through LD_RUN_PATH instead of --with-ld-opt.
export LD_RUN_PATH="$P/luajit/lib"
# The lua module's default lua paths point at lualib, as OpenResty's util/configure does.
lua_default_path() { # <lua module dir>
  cat >>"$1/config" <<CFG

echo '
#ifndef LUA_DEFAULT_PATH
#define LUA_DEFAULT_PATH "$P/lualib/?.lua;$P/lualib/?/init.lua"
#endif
#ifndef LUA_DEFAULT_CPATH
#define LUA_DEFAULT_CPATH "$P/lualib/?.so"
#endif
' >> "\$ngx_addon_dir/src/ngx_http_lua_autoconf.h"
CFG
}

NDK_DIR="$(basename "$NDK_SRC")"
case "$NAME" in
  openresty)
    OR_SRC="$WORK/$(untar openresty-1.25.3.1-patches-and-scripts.tar.gz)"
    LUA_MOD="$WORK/$(untar lua-nginx-module-0.10.26.tar.gz)"
    NGX_VER="$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$NGX_SRC/src/core/nginx.h")"
    n=0
    while read -r strip file mark; do
      [ -n "$file" ] || continue
      f="$OR_SRC/patches/$file"
      if [ "$mark" = server_header ]; then
        # the release fills in its own version: 1.25.3.1 -> ".1"
        sed 's/NGINX_VERSION ".unknown"/NGINX_VERSION ".1"/' "$f" >"$WORK/server_header.patch"
        f="$WORK/server_header.patch"
      fi
      run "patch-$n" patch -d "$NGX_SRC" -p"$strip" -i "$f"
      n=$((n + 1))
    done < <(node "$HERE/openresty-patches.js" "$OR_SRC" "$NGX_VER")
    say "applied $n OpenResty patches to nginx $NGX_VER"
    lua_default_path "$LUA_MOD"
    CONFIGURE=(auto/configure)
    NGX_PREFIX=/usr/local/openresty/nginx
    ARGS=(--prefix="$NGX_PREFIX" --with-cc-opt="$CC_OPT -DNGX_LUA_ABORT_AT_PANIC"
      --add-module="../$NDK_DIR" --add-module="../$(basename "$LUA_MOD")"
      --with-pcre-jit --with-stream --with-stream_ssl_module --with-stream_ssl_preread_module
      --with-http_v2_module --without-mail_pop3_module --without-mail_imap_module --without-mail_smtp_module
      --with-http_stub_status_module --with-http_realip_module --with-http_addition_module
      --with-http_auth_request_module --with-http_secure_link_module --with-http_random_index_module
      --with-http_gzip_static_module --with-http_sub_module --with-http_dav_module --with-http_flv_module
      --with-http_mp4_module --with-http_gunzip_module --with-threads --with-compat --with-http_ssl_module)
    ;;
  tengine)
    LUA_MOD="$NGX_SRC/modules/ngx_http_lua_module"
    lua_default_path "$LUA_MOD"
    CONFIGURE=(./configure)
    NGX_PREFIX=/usr/local/nginx
    # the bundled lua module (0.10.25) speaks the PCRE1 API only
    ARGS=(--with-cc-opt="$CC_OPT"
      --add-module="../$NDK_DIR" --add-module=modules/ngx_http_lua_module --add-module=modules/ngx_http_upstream_dyups_module
      --without-pcre2 --with-pcre-jit --with-stream --with-stream_ssl_module --with-http_v2_module
      --with-http_stub_status_module --with-http_realip_module --with-threads --with-compat --with-http_ssl_module)
    ;;
esac

# the source tree as a user would point `npm run layouts` at it: patched, not configured
mkdir -p "$STAGE/src"
cp -a "$NGX_SRC" "$STAGE/src/nginx"
say "configure (${#ARGS[@]} arguments)"
(cd "$NGX_SRC" && LUAJIT_LIB="$P/luajit/lib" LUAJIT_INC="$P/luajit/include/luajit-2.1" \
  run configure "${CONFIGURE[@]}" "${ARGS[@]}")
say "make -j$JOBS"
run make make -C "$NGX_SRC" -j"$JOBS"
run make-install make -C "$NGX_SRC" install DESTDIR="$WORK/destdir"
mv "$WORK/destdir$NGX_PREFIX" "$STAGE/nginx"
# the module sources sit beside the tree as configure expects them (../<module>):
# a dynamic module built later against this tree configures with the same line
cp -a "$NDK_SRC" "$STAGE/src/$NDK_DIR"
[ "$NAME" = openresty ] && cp -a "$LUA_MOD" "$STAGE/src/$(basename "$LUA_MOD")"
printf '%s\n' "${ARGS[@]}" >"$STAGE/configure.args"
VERSION_LINE="$("$STAGE/nginx/sbin/nginx" -v 2>&1 | head -n1 || true)"
cat >"$STAGE/platform.env" <<ENV
PLATFORM_NAME=$NAME
PLATFORM_PREFIX=$P
PLATFORM_NGINX=$P/nginx/sbin/nginx
PLATFORM_SRC=$P/src/nginx
PLATFORM_LUALIB=$P/lualib
PLATFORM_LUAJIT=$P/luajit
PLATFORM_VERSION='$VERSION_LINE'
PLATFORM_BUILD_SECONDS=$(( $(date +%s) - START ))
ENV
for old in "$CACHE/$NAME"-*; do
  [ "$old" = "$P" ] || [ ! -d "$old" ] || rm -rf "$old"
done
say "built in $(( $(date +%s) - START )) s: $P/nginx/sbin/nginx ($VERSION_LINE)"
echo "$P"
