#!/usr/bin/env bash
# Prints N distinct free TCP ports on 127.0.0.1, one per line (default 1).
# All sockets are held open together so the ports differ; they are free again on exit.
# Usage: bash ops/ports.sh [N]
set -euo pipefail
python3 - "${1:-1}" <<'PY'
import socket
import sys

socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
