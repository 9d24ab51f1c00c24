"""Public datasets fetched into a local cache (never into the repository).

MovieLens-100K comes from the RecBole wheel on PyPI, which ships it in RecBole's atomic
format (`ml-100k.inter`, `.item`, `.user`): PyPI is reachable wherever pip works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final

RECBOLE_REQUIREMENT: Final = "recbole==1.2.1"
ML100K_PREFIX: Final = "recbole/dataset_example/ml-100k/"
ML100K_FILES: Final = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


def cache_dir() -> Path:
    """`$RECSTREAM_CACHE`, else `~/.cache/recstream`."""
    configured = os.environ.get("RECSTREAM_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "recstream"


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ML100K_FILES)


def _download_wheel(requirement: str, into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        requirement,
        "-d",
        str(into),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"pip download {requirement} failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {requirement} gave {len(wheels)} wheels, wanted 1")
    return wheels[0]


def _extract_folder(wheel: Path, prefix: str, into: Path) -> None:
    """Copy the files directly under `prefix` in the wheel into `into`, flat."""
    into.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            name = member.filename
            if member.is_dir() or not name.startswith(prefix) or "/" in name[len(prefix) :]:
                continue
            with archive.open(member) as source, (into / Path(name).name).open("wb") as target:
                shutil.copyfileobj(source, target)


def fetch_ml100k(dest: Path | None = None) -> Path:
    """The folder holding MovieLens-100K in RecBole format, downloading it the first time.

    Default folder: `cache_dir() / "data" / "ml-100k"`. The download goes to a temporary
    folder beside it that is renamed into place, so a reader never sees half a dataset.
    """
    dest = dest if dest is not None else cache_dir() / "data" / "ml-100k"
    if _is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ml-100k-", dir=dest.parent) as scratch:
        work = Path(scratch)
        wheel = _download_wheel(RECBOLE_REQUIREMENT, work / "wheel")
        staged = work / "ml-100k"
        _extract_folder(wheel, ML100K_PREFIX, staged)
        if not _is_complete(staged):
            raise RuntimeError(f"{wheel.name} lacks some of {', '.join(ML100K_FILES)}")
        if dest.exists() and not _is_complete(dest):
            shutil.rmtree(dest)  # a partial folder from something else: replace it
        try:
            staged.rename(dest)
        except OSError:
            if not _is_complete(dest):  # not a concurrent fetch that won the race
                raise
    return dest
