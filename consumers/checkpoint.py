"""Durable checkpoints: safetensors for tensors, a JSON manifest, atomic rename.

Layout: `<dir>/ckpt-<sequence>/{<part>.safetensors ..., manifest.json}` (the
learner's parts: consumers/host_checkpoint.py). A checkpoint is written into a
hidden staging dir of its own writer, fsynced, then renamed into place; the
manifest carries a format version and each part's SHA-256, so a partial or
corrupt checkpoint is detected on load and the previous one used. Nothing is
ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT_VERSION = 1
MAIN_PART = "tensors"
PART_SUFFIX = ".safetensors"
MANIFEST_FILE = "manifest.json"
PREFIX = "ckpt-"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    path: Path
    sequence: int
    parts: dict[str, dict[str, Tensor]]
    manifest: dict[str, Any]

    @property
    def tensors(self) -> dict[str, Tensor]:
        """The main part (the only one of a single-process checkpoint)."""
        return self.parts[MAIN_PART]


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


def seal(
    directory: Path, temp: Path, manifest: dict[str, Any], keep: int, parts: list[str]
) -> Path:
    """Checksum the staged `parts` (only these), write the manifest, rename into place,
    prune old ones."""
    sequences = _sequences(directory)
    sequence = sequences[-1] + 1 if sequences else 1
    digests = {f"{part}{PART_SUFFIX}": _sha256(temp / f"{part}{PART_SUFFIX}") for part in parts}
    body = dict(manifest, format=FORMAT_VERSION, sha256=digests)
    manifest_path = temp / MANIFEST_FILE
    manifest_path.write_text(json.dumps(body, sort_keys=True), encoding="utf-8")
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


def write_checkpoint(
    directory: Path, tensors: dict[str, Tensor], manifest: dict[str, Any], keep: int = 3
) -> Path:
    """Write a new single-part checkpoint atomically and keep only the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    temp = staging_dir(directory, uuid.uuid4().hex)
    stage_part(temp, MAIN_PART, tensors)
    return seal(directory, temp, manifest, keep, [MAIN_PART])


def read_checkpoint(path: Path) -> Checkpoint:
    """Load and verify one checkpoint; raises `CorruptCheckpoint` when it is not whole."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
            raise CorruptCheckpoint(f"{path}: unknown manifest format")
        digests = manifest.get("sha256")
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
    return Checkpoint(path, int(path.name[len(PREFIX) :]), parts, manifest)


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; older ones stand in for corrupt ones."""
    for sequence in reversed(_sequences(directory)):
        try:
            return read_checkpoint(directory / _name(sequence))
        except CorruptCheckpoint as error:
            log.warning("skipping checkpoint: %s", error)
    return None
