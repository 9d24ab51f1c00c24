#!/usr/bin/env bash
# Stops the redis-server that ops/redis/start.sh started in DIR (the pid in DIR/redis.pid
# and only that pid): SIGTERM, SIGKILL after 10 s.
# Usage: bash ops/redis/stop.sh DIR
set -euo pipefail
pidfile=$1/redis.pid
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")

# Still a live redis-server (an exited or reused pid, or a zombie, does not match).
ours() {
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] &&
        ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}
if ours; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        ours || break
        sleep 0.1
    done
    if ours; then kill -KILL "$pid" 2>/dev/null || true; fi
fi
rm -f "$pidfile"
