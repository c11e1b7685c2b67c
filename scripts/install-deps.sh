#!/usr/bin/env bash
# Installs the Debian packages memdiag needs (as root), or prints the exact
# apt-get line and stops. Usage: scripts/install-deps.sh [runtime|test|platform|all]
# (platform: what building OpenResty / Tengine from source needs, scripts/platform/build.sh)
set -euo pipefail
want=${1:-all}
runtime=(nginx-core libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core luajit2 lua-cjson lua-nginx-websocket)
build=(nginx-dev gcc make libc6-dev libpcre3-dev libssl-dev zlib1g-dev)
testing=(wrk chromium procps curl)
platform=(gcc make libc6-dev patch libpcre3-dev libpcre2-dev libssl-dev zlib1g-dev)
case "$want" in
  runtime) pkgs=("${runtime[@]}") ;;
  test) pkgs=("${runtime[@]}" "${build[@]}" "${testing[@]}" "${platform[@]}") ;;
  platform) pkgs=("${platform[@]}") ;;
  all) pkgs=("${runtime[@]}" "${build[@]}" "${testing[@]}" "${platform[@]}") ;;
  *) echo "usage: $0 [runtime|test|platform|all]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "memdiag needs these Debian packages. Run as root:" >&2
  echo "  apt-get update && $line" >&2
  exit 1
fi
echo "memdiag: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# Debian starts the packaged nginx on install where it can; memdiag runs its own, private instances.
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
