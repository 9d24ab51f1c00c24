#!/usr/bin/env bash
# Stops the broker that ops/kafka/start.sh started in DATA_DIR: SIGTERM to the pid in
# DATA_DIR/kafka.pid (its shutdown hook closes cleanly), SIGKILL after 30 s. Only that pid.
# Usage: bash ops/kafka/stop.sh DATA_DIR
set -euo pipefail
data=$(cd "$1" 2>/dev/null && pwd) || exit 0 # no dir: nothing to stop
pidfile=$data/kafka.pid
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")

# Still our broker: its command line names this DATA_DIR (an exited or reused pid, or a
# zombie, does not match).
ours() { grep -qF "$data/server.properties" "/proc/$pid/cmdline" 2>/dev/null; }
if ours; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        ours || break
        sleep 0.1
    done
    if ours; then kill -KILL "$pid" 2>/dev/null || true; fi
fi
rm -f "$pidfile"
