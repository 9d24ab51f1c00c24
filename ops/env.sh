#!/usr/bin/env bash
# Prints the path of a ready virtual environment for this checkout, building it
# when missing. The environment lives outside the clone, keyed by a hash of
# pyproject.toml, so clean clones (CI) reuse it and a changed pyproject builds
# a new one; pip's cache keeps rebuilds local. Usage: venv=$(bash ops/env.sh)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
key=$(sha256sum "$root/pyproject.toml" | cut -c1-16)
base=${RECSTREAM_VENV_ROOT:-$HOME/.cache/recstream/venvs}
venv="$base/$key"
mkdir -p "$base"
# One builder at a time; the others wait and then find it ready.
exec 9>"$base/$key.lock"
flock 9
if [ ! -f "$venv/.ready" ]; then
    echo "recstream: building the Python environment in $venv (first run only; torch is large)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >&2
    # Dependencies and dev extras from the source tree; the package itself is not
    # installed: every checkout runs from its own tree (PYTHONPATH), so one
    # environment serves them all.
    "$venv/bin/pip" install -q "$root[dev]" >&2
    "$venv/bin/pip" uninstall -q -y recstream >&2
    touch "$venv/.ready"
fi
echo "$venv"
