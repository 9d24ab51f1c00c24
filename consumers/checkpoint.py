"""Durable checkpoints: safetensors for tensors, a JSON manifest, atomic rename.

Layout: `<dir>/ckpt-<sequence>/{tensors.safetensors, manifest.json}`. A
checkpoint is written into a hidden temp dir, fsynced, then renamed into place;
the manifest carries a format version and the tensors file's SHA-256, so a
partial or corrupt checkpoint is detected on load and the previous one used.
Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
MANIFEST_FILE = "manifest.json"
PREFIX = "ckpt-"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    path: Path
    sequence: int
    tensors: dict[str, Tensor]
    manifest: dict[str, Any]


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


def write_checkpoint(
    directory: Path, tensors: dict[str, Tensor], manifest: dict[str, Any], keep: int = 3
) -> Path:
    """Write a new checkpoint atomically and keep only the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    sequences = _sequences(directory)
    sequence = sequences[-1] + 1 if sequences else 1
    for stale in directory.glob(".tmp-*"):  # left by a writer that died mid-way
        shutil.rmtree(stale, ignore_errors=True)
    temp = directory / f".tmp-{_name(sequence)}"
    temp.mkdir()
    tensors_path = temp / TENSORS_FILE
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(tensors_path))
    _fsync(tensors_path)
    body = dict(manifest, format=FORMAT_VERSION, sha256={TENSORS_FILE: _sha256(tensors_path)})
    manifest_path = temp / MANIFEST_FILE
    manifest_path.write_text(json.dumps(body, sort_keys=True), encoding="utf-8")
    _fsync(manifest_path)
    _fsync(temp)
    final = directory / _name(sequence)
    os.rename(temp, final)
    _fsync(directory)
    for old in sequences[: max(0, len(sequences) + 1 - keep)]:
        shutil.rmtree(directory / _name(old), ignore_errors=True)
    return final


def read_checkpoint(path: Path) -> Checkpoint:
    """Load and verify one checkpoint; raises `CorruptCheckpoint` when it is not whole."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
            raise CorruptCheckpoint(f"{path}: unknown manifest format")
        tensors_path = path / TENSORS_FILE
        if _sha256(tensors_path) != manifest.get("sha256", {}).get(TENSORS_FILE):
            raise CorruptCheckpoint(f"{path}: tensors do not match their checksum")
        tensors = load_file(str(tensors_path))
    except (OSError, ValueError) as error:
        if isinstance(error, CorruptCheckpoint):
            raise
        raise CorruptCheckpoint(f"{path}: {error}") from error
    return Checkpoint(path, int(path.name[len(PREFIX) :]), tensors, manifest)


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; older ones stand in for corrupt ones."""
    for sequence in reversed(_sequences(directory)):
        try:
            return read_checkpoint(directory / _name(sequence))
        except CorruptCheckpoint as error:
            log.warning("skipping checkpoint: %s", error)
    return None
