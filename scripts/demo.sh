#!/usr/bin/env bash
# npm run demo — the README's first command. On a fresh machine: installs what is
# missing, builds, then starts
#   - a real nginx (2 workers, private prefix in .tmp/demo) with the memdiag include line
#     and the leak fixture (test/fixtures/leaky_upstream) in leaky mode,
#   - the control plane (memdiag serve, loopback, a throw-away SQLite file),
#   - a traffic generator (normal requests + an "upstream update" every 2 s),
# prints the web console URL and attaches the terminal console. Within about a
# minute the leaking pool group is the top suspect. Ctrl-C (or q) stops everything
# this script started.
#
# Non-interactive (tests, CI): MEMDIAG_DEMO_SECONDS=90 npm run demo
#   runs that long, prints one console frame, exits 0 when the top suspect is the leak, 1 otherwise.
# MEMDIAG_DEMO_CP_PORT=N: control-plane port (default 9146, or any free port when taken; 0 = any).
#
# npm run demo -- --platform tengine: the reference case study on a real Tengine 3.1.0 built
#   from ../shared/vendor (scripts/platform/build.sh): its dynamic-upstream module (dyups), the
#   upstream re-posted every 2 s with keepalive to the backend; the dyups pool group becomes the
#   top suspect.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO_DIR="$ROOT/.tmp/demo"
SECS="${MEMDIAG_DEMO_SECONDS:-}"
WINDOW=60

say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }

PLATFORM=debian
while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform) PLATFORM="${2:-}"; shift 2 ;;
    *) echo "usage: npm run demo [-- --platform tengine]" >&2; exit 2 ;;
  esac
done
case "$PLATFORM" in
  debian) HELPERS=dist/scripts/demo/helpers.js ;;
  tengine) HELPERS=dist/scripts/demo/tengine.js ;;
  *) echo "demo: --platform must be debian or tengine, got '$PLATFORM'" >&2; exit 2 ;;
esac

if [[ -n "$SECS" && ! "$SECS" =~ ^[0-9]+$ ]]; then
  echo "MEMDIAG_DEMO_SECONDS must be a number of seconds, got '$SECS'" >&2
  exit 2
fi

if [[ -z "${MEMDIAG_DEMO_NO_SETUP:-}" ]]; then # (tests set it: they have installed and built already)
  say "checking packages (Debian: nginx, lua module, build tools; npm) and building…"
  bash scripts/install-deps.sh test
  bash scripts/ensure-npm.sh >/dev/null
fi
if [[ "$PLATFORM" == tengine ]]; then
  say "building Tengine 3.1.0 from ../shared/vendor (cached after the first time)…"
  NGINX_BIN="$(bash scripts/platform/build.sh tengine)/nginx/sbin/nginx"
else
  bash scripts/build-fixture.sh
  NGINX_BIN=/usr/sbin/nginx
fi

NGINX_PID=""
CP_PID=""
TRAFFIC_PID=""
SLEEP_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n "$SLEEP_PID" ]] && kill "$SLEEP_PID" 2>/dev/null || true
  [[ -n "$TRAFFIC_PID" ]] && kill -TERM "$TRAFFIC_PID" 2>/dev/null && wait "$TRAFFIC_PID" 2>/dev/null || true
  if [[ -n "$NGINX_PID" ]] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NGINX_PID" 2>/dev/null || true
  fi
  [[ -n "$CP_PID" ]] && kill -TERM "$CP_PID" 2>/dev/null && wait "$CP_PID" 2>/dev/null || true
  rm -f "$DEMO_DIR"/memdiag.db "$DEMO_DIR"/memdiag.db-wal "$DEMO_DIR"/memdiag.db-shm
  [[ -n "$NGINX_PID$CP_PID$TRAFFIC_PID" ]] && say "stopped nginx, the control plane and the traffic generator (logs in .tmp/demo/logs)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# private nginx prefix, ports, token
eval "$(node "$HELPERS" setup --dir "$DEMO_DIR" --nginx "$NGINX_BIN" --cp-port "${MEMDIAG_DEMO_CP_PORT:-9146}")"
URL="http://127.0.0.1:$CP_PORT"

say "starting the control plane on $URL"
node bin/memdiag serve --host 127.0.0.1 --port "$CP_PORT" --db "$DEMO_DIR/memdiag.db" --token "$TOKEN" \
  >"$DEMO_DIR/logs/control-plane.log" 2>&1 &
CP_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "$URL/api/health" >/dev/null 2>&1 && break
  kill -0 "$CP_PID" 2>/dev/null || { cat "$DEMO_DIR/logs/control-plane.log" >&2; exit 1; }
  sleep 0.1
done

if [[ "$PLATFORM" == tengine ]]; then
  say "starting Tengine (dyups upstream: consistent hash over 150 servers, keepalive) in .tmp/demo"
else
  say "starting nginx (2 workers, leak fixture in leaky mode) in .tmp/demo"
fi
"$NGINX_BIN" -p "$DEMO_DIR" -c "$DEMO_DIR/conf/nginx.conf" -g "daemon off;" 2>>"$DEMO_DIR/logs/error.log" &
NGINX_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$APP_PORT/" >/dev/null 2>&1 && break
  kill -0 "$NGINX_PID" 2>/dev/null || { tail -20 "$DEMO_DIR/logs/error.log" >&2; exit 1; }
  sleep 0.1
done

say "starting traffic: normal requests, and an upstream update every 2 s"
if [[ "$PLATFORM" == tengine ]]; then
  node "$HELPERS" traffic --app-port "$APP_PORT" --dyups-port "$DYUPS_PORT" --backend-port "$BACKEND_PORT" 2>>"$DEMO_DIR/logs/traffic.log" &
else
  node "$HELPERS" traffic --app-port "$APP_PORT" 2>>"$DEMO_DIR/logs/traffic.log" &
fi
TRAFFIC_PID=$!

cat >&2 <<EOF

  web console:   $URL/?window=1m
  terminal:      node bin/memdiag console --url $URL --window 1m
  one snapshot:  node bin/memdiag snapshot --port $MEMDIAG_PORT
EOF
if [[ "$PLATFORM" == tengine ]]; then
  cat >&2 <<EOF
  the gateway:   http://127.0.0.1:$APP_PORT/svc/   (dyups interface: http://127.0.0.1:$DYUPS_PORT/detail)

  Within about a minute the pools of superseded dyups upstream versions (create size 512) are the top suspect.
EOF
else
  cat >&2 <<EOF
  the gateway:   http://127.0.0.1:$APP_PORT/   (upstream updates: /upstream/update, leaked so far: /upstream/status)

  Within about a minute the leaking pool group (held by ngx_http_leaky_upstream_module) is the top suspect.
EOF
fi

if [[ -n "$SECS" ]]; then
  say "running for $SECS s…"
  end=$((SECONDS + SECS))
  while ((SECONDS < end)); do
    sleep 5 & SLEEP_PID=$!; wait "$SLEEP_PID" # (a plain sleep would hold off the INT/TERM trap until it ends)
    kill -0 "$NGINX_PID" 2>/dev/null || { say "nginx exited"; tail -20 "$DEMO_DIR/logs/error.log" >&2; exit 1; }
    kill -0 "$CP_PID" 2>/dev/null || { say "the control plane exited"; tail -20 "$DEMO_DIR/logs/control-plane.log" >&2; exit 1; }
  done
  node bin/memdiag console --url "$URL" --token "$TOKEN" --window "${WINDOW}s" --once || true
  node "$HELPERS" check --url "$URL" --window "$WINDOW"
  exit $?
fi

if [[ -t 0 && -t 1 ]]; then
  say "attaching the terminal console (q or Ctrl-C to stop the demo)"
  sleep 1
  node bin/memdiag console --url "$URL" --token "$TOKEN" --window "${WINDOW}s" || true
else
  # no terminal: print a frame every 15 s until stopped
  while kill -0 "$NGINX_PID" 2>/dev/null; do
    sleep 15 & SLEEP_PID=$!; wait "$SLEEP_PID"
    node bin/memdiag console --url "$URL" --token "$TOKEN" --window "${WINDOW}s" --once || true
  done
fi
