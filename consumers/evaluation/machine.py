"""What the evaluation ran on: CPU, cores, load, thread pinning and library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
LIBRARIES = ("torch", "numpy", "scipy", "implicit", "rectools-lightfm", "lightfm", "matplotlib")


def pin_threads() -> None:
    """One thread per process for BLAS/OpenMP (effective only before numpy is imported)."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _blas() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "num_threads", "architecture", "version")
    return [{key: pool.get(key) for key in keys} for pool in threadpool_info()]


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load: other work on the machine skews every timing."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def describe() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
        "torch_threads": torch.get_num_threads(),
        "env": {name: os.environ.get(name) for name in THREAD_VARIABLES + OPENBLAS_VARIABLES},
        "versions": {name: v for name in LIBRARIES if (v := _version(name)) is not None},
        "blas": _blas(),
    }
