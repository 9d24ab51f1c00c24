"""The checkpoint manifest as typed, frozen objects, read and written as the same JSON.

A host's manifest holds its shared totals, the offsets and applied counts per partition
merged over its workers, and each worker's own entries (`WorkerManifest`: what one
learner process restores). `from_json` validates what it reads: a manifest that does
not parse raises `ValueError` (the checkpoint is corrupt, the previous one is used).
A single learner's manifest from before hosts (no `workers`) reads as a host of one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Offsets = tuple[tuple[str, int, int], ...]
"""(topic, partition, value) rows, sorted by topic and partition."""


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: expected an integer, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {value!r}")
    return value


def _offsets(value: Any, what: str) -> Offsets:
    if not isinstance(value, list):
        raise ValueError(f"{what}: expected a list of [topic, partition, value]")
    rows = []
    for row in value:
        if not isinstance(row, list) or len(row) != 3:
            raise ValueError(f"{what}: expected [topic, partition, value], got {row!r}")
        rows.append((_str(row[0], what), _int(row[1], what), _int(row[2], what)))
    return tuple(rows)


def offsets_json(offsets: Offsets) -> list[list[str | int]]:
    return [[topic, partition, value] for topic, partition, value in offsets]


@dataclass(frozen=True, slots=True)
class QualityTotals:
    """Running totals of an online quality measure (consumers/quality.py)."""

    scored: int
    hits: float
    gains: float

    def to_json(self) -> dict[str, int | float]:
        return {"scored": self.scored, "hits": self.hits, "gains": self.gains}

    @classmethod
    def from_json(cls, value: Any, what: str) -> QualityTotals:
        body = _object(value, what)
        return cls(
            _int(body.get("scored"), f"{what}.scored"),
            _number(body.get("hits"), f"{what}.hits"),
            _number(body.get("gains"), f"{what}.gains"),
        )


@dataclass(frozen=True, slots=True)
class WorkerManifest:
    """One learner process's entries: its model, totals, tombstones and offsets."""

    model: str
    config: Mapping[str, Any]  # the model's hyper-parameters, compared on restore
    version: int
    events: int
    doomed_keys: tuple[str, ...]  # store keys of forgotten users still to delete
    quality: QualityTotals
    popularity_quality: QualityTotals
    positions: Offsets  # the next offset to read, per partition
    applied: Offsets  # records applied to the model, per partition

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": dict(self.config),
            "version": self.version,
            "events": self.events,
            "doomed_keys": list(self.doomed_keys),
            "quality": self.quality.to_json(),
            "popularity_quality": self.popularity_quality.to_json(),
            "positions": offsets_json(self.positions),
            "applied": offsets_json(self.applied),
        }

    @classmethod
    def from_json(cls, value: Any, what: str = "manifest") -> WorkerManifest:
        body = _object(value, what)
        doomed = body.get("doomed_keys")
        if not isinstance(doomed, list):
            raise ValueError(f"{what}.doomed_keys: expected a list of keys")
        return cls(
            _str(body.get("model"), f"{what}.model"),
            _object(body.get("config"), f"{what}.config"),
            _int(body.get("version"), f"{what}.version"),
            _int(body.get("events"), f"{what}.events"),
            tuple(_str(key, f"{what}.doomed_keys") for key in doomed),
            QualityTotals.from_json(body.get("quality"), f"{what}.quality"),
            QualityTotals.from_json(body.get("popularity_quality"), f"{what}.popularity_quality"),
            _offsets(body.get("positions"), f"{what}.positions"),
            _offsets(body.get("applied"), f"{what}.applied"),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """A host's checkpoint: the shared totals, merged offsets, and every worker's entries
    (keys 0 .. N - 1, one per worker part)."""

    model: str
    config: Mapping[str, Any]
    version: int
    events: int
    positions: Offsets
    applied: Offsets
    workers: Mapping[int, WorkerManifest]

    @classmethod
    def of_workers(cls, entries: Sequence[WorkerManifest], views_topic: str) -> Manifest:
        """The host's manifest from its workers' entries (worker 0's first): the highest
        version, worker 0's shared totals, offsets merged (`merge_offsets`)."""
        first = entries[0]
        return cls(
            first.model,
            first.config,
            max(entry.version for entry in entries),
            first.events,
            merge_offsets((entry.positions for entry in entries), views_topic),
            merge_offsets((entry.applied for entry in entries), views_topic),
            dict(enumerate(entries)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": dict(self.config),
            "version": self.version,
            "events": self.events,
            "positions": offsets_json(self.positions),
            "applied": offsets_json(self.applied),
            "workers": {str(index): entry.to_json() for index, entry in self.workers.items()},
        }

    @classmethod
    def from_json(cls, value: Any) -> Manifest:
        body = _object(value, "manifest")
        if "workers" not in body:  # a single learner's, from before hosts
            entry = WorkerManifest.from_json(body)
            return cls(
                entry.model,
                entry.config,
                entry.version,
                entry.events,
                entry.positions,
                entry.applied,
                {0: entry},
            )
        workers = _object(body["workers"], "manifest.workers")
        if not workers or set(workers) != {str(index) for index in range(len(workers))}:
            raise ValueError(f"manifest.workers: expected keys 0 .. N - 1, got {sorted(workers)}")
        return cls(
            _str(body.get("model"), "manifest.model"),
            _object(body.get("config"), "manifest.config"),
            _int(body.get("version"), "manifest.version"),
            _int(body.get("events"), "manifest.events"),
            _offsets(body.get("positions"), "manifest.positions"),
            _offsets(body.get("applied"), "manifest.applied"),
            {
                int(key): WorkerManifest.from_json(entry, f"manifest.workers.{key}")
                for key, entry in sorted(workers.items(), key=lambda item: int(item[0]))
            },
        )


def merge_offsets(parts: Iterable[Offsets], views_topic: str) -> Offsets:
    """One value per partition from every worker's: a views partition is read by one
    worker only (the others hold older copies: take the highest); every worker reads
    the other topics in full (take the lowest: replaying a tombstone is harmless)."""
    merged: dict[tuple[str, int], int] = {}
    for rows in parts:
        for topic, partition, value in rows:
            key = (topic, partition)
            pick = max if topic == views_topic else min
            merged[key] = pick(value, merged.get(key, value))
    return tuple((topic, partition, value) for (topic, partition), value in sorted(merged.items()))
