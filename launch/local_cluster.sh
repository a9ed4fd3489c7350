#!/usr/bin/env bash
# A local Ray head on 127.0.0.1 for trying `ray job submit` (launch/submit.py) on one machine.
#
#   launch/local_cluster.sh start [--num-cpus N] [any other `ray start` flag]
#   launch/local_cluster.sh status
#   launch/local_cluster.sh stop
#
# Everything of this head lives in $DISTREC_RAY_DIR (default /tmp/distrec-ray-$PORT): its temp dir
# (so plain `ray.init()` calls elsewhere on the machine never find and join it), its log and pid.
# `stop` ends only this head (never `ray stop`, which would kill every Ray cluster of the machine).
# Ports: RAY_PORT (GCS, default 6390), RAY_DASHBOARD_PORT (job server, default 8275),
# RAY_CLIENT_PORT (20011), RAY_AGENT_PORT (dashboard agent, 52375); change them to run several heads.
# Ray 2.60 uses token auth: the token is read from (or written to) ~/.ray/auth_token.
set -euo pipefail

PORT=${RAY_PORT:-6390}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8275}
CLIENT_PORT=${RAY_CLIENT_PORT:-20011}  # outside the worker port range 10002-19999
AGENT_PORT=${RAY_AGENT_PORT:-52375}
DIR=${DISTREC_RAY_DIR:-/tmp/distrec-ray-$PORT}
RAY=${RAY:-$(command -v ray || echo "$(dirname "$0")/../.venv/bin/ray")}

export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}

running() { [[ -f "$DIR/head.pid" ]] && kill -0 "$(cat "$DIR/head.pid")" 2>/dev/null; }

start() {
  if running; then echo "already running (pid $(cat "$DIR/head.pid")); address http://127.0.0.1:$DASHBOARD_PORT"; return; fi
  mkdir -p "$DIR"
  # --block keeps `ray start` in the foreground: it owns the head's processes and takes them
  # down on SIGTERM, so stopping this one pid stops exactly this cluster.
  nohup "$RAY" start --head --block --disable-usage-stats \
    --node-ip-address 127.0.0.1 --port "$PORT" \
    --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
    --ray-client-server-port "$CLIENT_PORT" --dashboard-agent-listen-port "$AGENT_PORT" \
    --temp-dir "$DIR/tmp" "$@" >"$DIR/head.log" 2>&1 &
  echo $! >"$DIR/head.pid"
  # the job server answers (401 without the token still means up) once the dashboard is up
  for _ in $(seq 1 120); do
    if ! running; then echo "ray head exited; see $DIR/head.log" >&2; tail -20 "$DIR/head.log" >&2; exit 1; fi
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DASHBOARD_PORT/api/version" || true)
    if [[ "$code" != "000" ]]; then
      echo "ray head up (pid $(cat "$DIR/head.pid")); submit jobs to http://127.0.0.1:$DASHBOARD_PORT"
      echo "  export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT RAY_AUTH_MODE=token"
      return
    fi
    sleep 1
  done
  echo "ray head did not answer on port $DASHBOARD_PORT within 120 s; see $DIR/head.log" >&2
  stop
  exit 1
}

stop() {
  if ! running; then echo "not running"; rm -f "$DIR/head.pid"; return; fi
  local pid; pid=$(cat "$DIR/head.pid")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  rm -f "$DIR/head.pid"
  echo "ray head stopped"
}

status() {
  if running; then "$RAY" status --address "127.0.0.1:$PORT"; else echo "not running"; exit 3; fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  start) start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
