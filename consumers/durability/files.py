"""Atomic checkpoint directories: safetensors parts, a JSON manifest, one rename.

Layout: `<dir>/ckpt-<sequence>/{<part>.safetensors ..., manifest.json}` (which parts
and what the manifest says: consumers/durability/host.py and manifest.py). A checkpoint
is written into a hidden staging dir of its own writer, fsynced, then renamed into
place; the manifest carries a format version and each part's SHA-256 beside its body,
so a partial or corrupt checkpoint is detected on load and the previous one used.
Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT_VERSION = 1
FORMAT_KEY = "format"
DIGESTS_KEY = "sha256"
PART_SUFFIX = ".safetensors"
MANIFEST_FILE = "manifest.json"
PREFIX = "ckpt-"

log = logging.getLogger(__name__)

Read = TypeVar("Read")
Parts = dict[str, dict[str, Tensor]]


class CorruptCheckpoint(ValueError):
    """A checkpoint on disk is incomplete or does not match its checksum."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sequences(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        if entry.name.startswith(PREFIX) and entry.name[len(PREFIX) :].isdigit():
            found.append(int(entry.name[len(PREFIX) :]))
    return sorted(found)


def _name(sequence: int) -> str:
    return f"{PREFIX}{sequence:012d}"


def staging_dir(directory: Path, label: str) -> Path:
    """A hidden directory where the parts of one checkpoint are written before `seal`;
    `label` names one writer's checkpoint, unique to its run."""
    temp = directory / f".tmp-{label}"
    temp.mkdir(parents=True, exist_ok=True)
    return temp


def stage_part(temp: Path, part: str, tensors: dict[str, Tensor]) -> None:
    """Write one part (several processes may each write their own into one staging dir)."""
    path = temp / f"{part}{PART_SUFFIX}"
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(path))
    _fsync(path)


def seal(directory: Path, temp: Path, body: dict[str, Any], keep: int, parts: list[str]) -> Path:
    """Checksum the staged `parts` (only these), write the manifest (`body` with the
    format and the checksums), rename into place, prune old ones."""
    sequences = _sequences(directory)
    sequence = sequences[-1] + 1 if sequences else 1
    digests = {f"{part}{PART_SUFFIX}": _sha256(temp / f"{part}{PART_SUFFIX}") for part in parts}
    manifest = {**body, FORMAT_KEY: FORMAT_VERSION, DIGESTS_KEY: digests}
    manifest_path = temp / MANIFEST_FILE
    manifest_path.write_text(json.dumps(manifest, sort_keys=True), encoding="utf-8")
    _fsync(manifest_path)
    _fsync(temp)
    final = directory / _name(sequence)
    os.rename(temp, final)
    _fsync(directory)
    for stale in directory.glob(".tmp-*"):  # left by a writer that died mid-way
        shutil.rmtree(stale, ignore_errors=True)
    for old in sequences[: max(0, len(sequences) + 1 - keep)]:
        shutil.rmtree(directory / _name(old), ignore_errors=True)
    return final


def read_parts(path: Path) -> tuple[Parts, dict[str, Any]]:
    """Every part the manifest lists and its body (without format and checksums), verified;
    raises `CorruptCheckpoint` when the checkpoint is not whole."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get(FORMAT_KEY) != FORMAT_VERSION:
            raise CorruptCheckpoint(f"{path}: unknown manifest format")
        digests = manifest.pop(DIGESTS_KEY, None)
        if not isinstance(digests, dict) or not digests:
            raise CorruptCheckpoint(f"{path}: manifest lists no parts")
        parts = {}
        for file_name, digest in digests.items():
            if _sha256(path / file_name) != digest:
                raise CorruptCheckpoint(f"{path}: {file_name} does not match its checksum")
            parts[file_name.removesuffix(PART_SUFFIX)] = load_file(str(path / file_name))
    except (OSError, ValueError) as error:
        if isinstance(error, CorruptCheckpoint):
            raise
        raise CorruptCheckpoint(f"{path}: {error}") from error
    del manifest[FORMAT_KEY]
    return parts, manifest


def newest_body(directory: Path) -> dict[str, Any] | None:
    """The newest checkpoint's manifest body (no parts read, nothing verified), None when
    there is none or it does not parse: enough to see what wrote it."""
    sequences = _sequences(directory)
    if not sequences:
        return None
    try:
        body = json.loads((directory / _name(sequences[-1]) / MANIFEST_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def latest(directory: Path, read: Callable[[Path], Read]) -> Read | None:
    """`read` of the newest checkpoint it does not find corrupt (`CorruptCheckpoint`):
    older ones stand in for corrupt ones."""
    for number in reversed(_sequences(directory)):
        try:
            return read(directory / _name(number))
        except CorruptCheckpoint as error:
            log.warning("skipping checkpoint: %s", error)
    return None
