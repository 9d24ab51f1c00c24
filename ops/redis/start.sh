#!/usr/bin/env bash
# Starts a throwaway redis-server on 127.0.0.1:PORT (no persistence, 64 databases) with
# its pid and log in DIR, and waits until it answers PING. Installs Debian's redis-server
# when missing (a system redis the package may start on 6379 is left alone).
# Stop it with: bash ops/redis/stop.sh DIR
# Usage: bash ops/redis/start.sh PORT DIR [REDIS-SERVER OPTIONS...]
# (options such as --tls-port and --user, for tests of credentials; PORT stays plain)
set -euo pipefail
port=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
shift 2

if ! command -v redis-server >/dev/null; then
    echo "redis: installing redis-server with apt-get (first run only)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq redis-server >/dev/null
fi

redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
    --databases 64 --dir "$dir" --logfile "$dir/redis.log" "$@" </dev/null >/dev/null 2>&1 &
pid=$!
echo "$pid" >"$dir/redis.pid"

for _ in $(seq 100); do # up to ~10 s
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
        echo "redis://127.0.0.1:$port"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
echo "redis: did not answer PING on port $port; log:" >&2
tail -n 20 "$dir/redis.log" >&2 || true
bash "$(dirname "${BASH_SOURCE[0]}")/stop.sh" "$dir" || true
exit 1
