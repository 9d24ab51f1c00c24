#!/usr/bin/env bash
# Runs every speed benchmark and writes benchmarks/results/<name>.json:
#   kernel, topn, memory, publish, end_to_end
# Builds (once) a benchmark environment with the peers and ANN libraries, starts its own
# Kafka and Redis on free loopback ports (stopped on exit, by their pid files), pins one
# BLAS/OpenMP/torch thread per process. About 40 minutes on 2 busy cores (--quick: 10).
# Usage: bash benchmarks/run_all.sh [--quick] [NAME ...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
quick=()
names=()
for arg in "$@"; do
    if [ "$arg" = --quick ]; then quick=(--quick); else names+=("$arg"); fi
done
[ ${#names[@]} -gt 0 ] || names=(kernel topn memory publish end_to_end)

venv=${RECSTREAM_BENCH_VENV:-$HOME/.cache/recstream/bench6-venv}
modules="torch, numba, redis, kafka, implicit, scipy, hnswlib, faiss, usearch, threadpoolctl, crc32c, hiredis"
if ! "$venv/bin/python" -c "import $modules" 2>/dev/null; then
    echo "run_all: building the benchmark environment in $venv (first run only)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >&2
    # The project's dependencies and its [bench] extra (peers, ANN libraries, threadpoolctl).
    "$venv/bin/pip" install -q "$root[bench]" >&2
    "$venv/bin/pip" uninstall -q -y recstream >&2
    # pyinstrument for hot_path.py --profile.
    "$venv/bin/pip" install -q pyinstrument >&2
fi

run=$(mktemp -d "${TMPDIR:-/tmp}/recstream-bench.XXXXXX")
cleanup() {
    local rc=$?
    bash ops/kafka/stop.sh "$run/kafka" || true
    bash ops/redis/stop.sh "$run/redis" || true
    rm -rf "$run"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

needs_services=0
for name in "${names[@]}"; do
    case $name in publish | end_to_end) needs_services=1 ;; esac
done
if [ "$needs_services" = 1 ]; then
    read -r kafka_port controller_port redis_port <<<"$(bash ops/ports.sh 3 | xargs)"
    RECSTREAM_BENCH_KAFKA=$(bash ops/kafka/start.sh "$kafka_port" "$run/kafka" "$controller_port")
    RECSTREAM_BENCH_REDIS=$(bash ops/redis/start.sh "$redis_port" "$run/redis")
    export RECSTREAM_BENCH_KAFKA RECSTREAM_BENCH_REDIS
fi

export PYTHONPATH="$root" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
for name in "${names[@]}"; do
    echo "=== $name"
    "$venv/bin/python" "benchmarks/$name.py" "${quick[@]}"
done
