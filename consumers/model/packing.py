"""Ragged lists and raw ids as flat tensors, so state can live in safetensors."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from streamer.events import Id, id_text

STRING, INTEGER, FORGOTTEN = 0, 1, 2


def pack_lists(lists: Sequence[Iterable[int]]) -> tuple[Tensor, Tensor]:
    """CSR form: (offsets of length n + 1, concatenated values)."""
    values = [sorted(values) for values in lists]
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    flat = np.fromiter(
        itertools.chain.from_iterable(values), dtype=np.int64, count=int(offsets[-1])
    )
    return torch.from_numpy(offsets), torch.from_numpy(flat)


def unpack_lists(offsets: Tensor, values: Tensor) -> list[list[int]]:
    bounds = offsets.tolist()
    flat = values.tolist()
    return [flat[start:end] for start, end in itertools.pairwise(bounds)]


def pack_ids(ids: Sequence[Id | None]) -> dict[str, Tensor]:
    """UTF-8 bytes, offsets and a kind per id (string, integer, or forgotten)."""
    texts = [b"" if raw is None else id_text(raw).encode("utf-8") for raw in ids]
    kinds = [
        FORGOTTEN if raw is None else INTEGER if isinstance(raw, int) else STRING for raw in ids
    ]
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    return {
        "bytes": torch.frombuffer(bytearray(b"".join(texts)) or bytearray(1), dtype=torch.uint8),
        "offsets": torch.from_numpy(np.concatenate(([0], np.cumsum(lengths)))),
        "kinds": torch.tensor(kinds, dtype=torch.uint8),
    }


def unpack_ids(packed: dict[str, Tensor]) -> list[Id | None]:
    data = packed["bytes"].numpy().tobytes()
    bounds = packed["offsets"].tolist()
    ids: list[Id | None] = []
    for kind, (start, end) in zip(
        packed["kinds"].tolist(), itertools.pairwise(bounds), strict=True
    ):
        text = data[start:end].decode("utf-8")
        ids.append(None if kind == FORGOTTEN else int(text) if kind == INTEGER else text)
    return ids


def section(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors named `prefix...`, with the prefix taken off."""
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
