"""What every speed benchmark shares: the machine it ran on, thread pinning, JSON out."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from statistics import fmean
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
LIBRARIES = ("torch", "numpy", "scipy", "implicit", "rectools-lightfm", "lightfm", "matplotlib")


def pin_threads(threads: int = 1) -> None:
    """One BLAS/OpenMP/torch thread (unless told otherwise), set before the math starts."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, load, threads, library versions and which BLAS kernels
    run (threadpoolctl)."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "env": {name: os.environ.get(name) for name in THREAD_VARIABLES + OPENBLAS_VARIABLES},
        "versions": {name: v for name in LIBRARIES if (v := _version(name)) is not None},
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: pool.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for pool in threadpool_info()
        ]
    except ImportError:
        pass
    return info


def machine_at_end() -> dict[str, Any]:
    """`machine()` for a report written after its run, with the load average then."""
    info = machine()
    info["load_average_at_end"] = list(os.getloadavg())
    return info


def seed_means(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over the seeds' runs (every run has the first's keys)."""
    return {key: fmean(run[key] for run in runs) for key in runs[0]}


def describe(info: dict[str, Any]) -> str:
    cores, memory, load = info["cores"], info["memory_gib"], info["load_average_at_start"]
    return f"{info['cpu']}, {cores} cores, {memory} GiB, load {load[0]:.1f} at start"


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def write(name: str, report: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    report = {"benchmark": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **report}
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


class Timer:
    """`with Timer() as t: ...; t.seconds` (wall) and `t.cpu_seconds` (this process's CPU
    time: on a machine others share, the steadier measure of single-threaded work)."""

    def __enter__(self) -> Timer:
        self._started = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *args: object) -> None:
        self.seconds = time.perf_counter() - self._started
        self.cpu_seconds = time.process_time() - self._cpu


ROOT = Path(__file__).resolve().parent.parent


def free_ports(n: int) -> list[int]:
    import subprocess

    out = subprocess.run(
        ["bash", str(ROOT / "ops/ports.sh"), str(n)], check=True, capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


class Service:
    """A Redis or Kafka of our own, started by ops/<name>/start.sh and stopped by its pid file.

    `RECSTREAM_BENCH_REDIS` / `RECSTREAM_BENCH_KAFKA` name ones already running (run_all.sh
    starts them once for every benchmark); then nothing is started or stopped here.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.address = os.environ.get(f"RECSTREAM_BENCH_{name.upper()}", "")
        self._dir: str | None = None

    def __enter__(self) -> str:
        import subprocess
        import tempfile

        if self.address:
            return self.address
        self._dir = tempfile.mkdtemp(prefix=f"recstream-bench-{self.name}-")
        ports = [str(p) for p in free_ports(2)]
        args = ports if self.name == "kafka" else ports[:1]
        start = ["bash", str(ROOT / f"ops/{self.name}/start.sh"), args[0], self._dir, *args[1:]]
        self.address = subprocess.run(
            start, check=True, capture_output=True, text=True
        ).stdout.strip()
        return self.address

    def __exit__(self, *args: object) -> None:
        import shutil
        import subprocess

        if self._dir is not None:
            subprocess.run(["bash", str(ROOT / f"ops/{self.name}/stop.sh"), self._dir], check=False)
            shutil.rmtree(self._dir, ignore_errors=True)
