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
# Ray 2.60 uses token auth: the token is read from ~/.ray/auth_token (`start` creates it if missing).
set -euo pipefail

PORT=${RAY_PORT:-6390}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8275}
CLIENT_PORT=${RAY_CLIENT_PORT:-20011}  # outside the worker port range 10002-19999
AGENT_PORT=${RAY_AGENT_PORT:-52375}
DIR=${DISTREC_RAY_DIR:-/tmp/distrec-ray-$PORT}
RAY=${RAY:-$(command -v ray || echo "$(dirname "$0")/../.venv/bin/ray")}

# jobs run `python` from the PATH of the head: put the environment that holds ray (and distrec) first
export PATH="$(cd "$(dirname "$RAY")" && pwd):$PATH"
export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# the raylet waits this long for its dashboard agent (default ~15 s: too short on a loaded machine)
export RAY_agent_register_timeout_ms=${RAY_agent_register_timeout_ms:-120000}
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}

running() { [[ -f "$DIR/head.pid" ]] && kill -0 "$(cat "$DIR/head.pid")" 2>/dev/null; }

start_once() {
  # --block keeps `ray start` in the foreground: it owns the head's processes and takes them
  # down on SIGTERM, so stopping this one pid stops exactly this cluster.
  nohup "$RAY" start --head --block --disable-usage-stats \
    --node-ip-address 127.0.0.1 --port "$PORT" \
    --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
    --ray-client-server-port "$CLIENT_PORT" --dashboard-agent-listen-port "$AGENT_PORT" \
    --temp-dir "$DIR/tmp" "$@" >"$DIR/head.log" 2>&1 &
  echo $! >"$DIR/head.pid"
  # ready once the node has registered ("Ray runtime started") and the job server answers an
  # authenticated request (the dashboard starts it last)
  for _ in $(seq 1 240); do
    if ! running; then return 1; fi
    # read each time: on a fresh machine `ray start` writes the token first
    token=${RAY_AUTH_TOKEN:-$(cat "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" 2>/dev/null || true)}
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$DASHBOARD_PORT/api/jobs/" || true)
    if [[ "$code" == "200" ]] && grep -q "Ray runtime started" "$DIR/head.log"; then return 0; fi
    sleep 1
  done
  stop >/dev/null
  return 1
}

start() {
  if running; then echo "already running (pid $(cat "$DIR/head.pid")); address http://127.0.0.1:$DASHBOARD_PORT"; return; fi
  mkdir -p "$DIR"
  # `ray start` refuses token auth without a token (a fresh machine has none): make one if missing
  "$RAY" get-auth-token --generate >/dev/null
  # Ray gives a starting node 30 s to register; on an overloaded machine that can fail: retry.
  for attempt in 1 2 3; do
    if start_once "$@"; then
      echo "ray head up (pid $(cat "$DIR/head.pid")); submit jobs to http://127.0.0.1:$DASHBOARD_PORT"
      echo "  export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT RAY_AUTH_MODE=token"
      return
    fi
    echo "ray head failed to start (attempt $attempt); see $DIR/head.log" >&2
    tail -3 "$DIR/head.log" >&2
    rm -f "$DIR/head.pid"
  done
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
