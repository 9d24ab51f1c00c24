"""Embedding tables that grow in amortised chunks (updated in place by the kernel)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

GROWTH = 1.5
MIN_CAPACITY = 1024


class RowStorage:
    """The live rows of a `capacity x dim` weight matrix and its per-row accumulator."""

    _weight: Tensor
    _accumulator: Tensor
    rows: int
    _arrays_of: tuple[Tensor | None, int] = (None, 0)
    _arrays: tuple[np.ndarray, np.ndarray]

    @property
    def capacity(self) -> int:
        return self._weight.shape[0]

    @property
    def weight(self) -> Tensor:
        """The live rows (a view: writes go to the table)."""
        return self._weight[: self.rows]

    @property
    def accumulator(self) -> Tensor:
        return self._accumulator[: self.rows]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """numpy views of the live rows of (weight, accumulator), for compiled code to
        write through: kept between calls, re-taken when the rows or the buffers change
        (growth, a reloaded table), as taking them costs microseconds per call."""
        table, rows = self._arrays_of
        if table is not self._weight or rows != self.rows:
            self._arrays = self.weight.numpy(), self.accumulator.numpy()
            self._arrays_of = self._weight, self.rows
        return self._arrays


class EmbeddingTable(RowStorage):
    """A float32 `rows x dim` table plus one Adagrad accumulator per row.

    Row-wise Adagrad (one scalar per row, as in TorchRec) keeps optimizer state
    at 4 bytes a row instead of doubling the table.
    """

    def __init__(self, dim: int, init_std: float, generator: torch.Generator) -> None:
        self.dim = dim
        self.init_std = init_std
        self._generator = generator
        self._weight = torch.zeros(MIN_CAPACITY, dim)
        self._accumulator = torch.zeros(MIN_CAPACITY)
        self.rows = 0

    def load(self, weight: Tensor, accumulator: Tensor) -> None:
        """Replace the live rows (restoring a checkpoint)."""
        rows = weight.shape[0]
        capacity = max(rows, MIN_CAPACITY)
        self._weight = torch.zeros(capacity, self.dim)
        self._weight[:rows] = weight
        self._accumulator = torch.zeros(capacity)
        self._accumulator[:rows] = accumulator
        self.rows = rows

    def grow_to(self, rows: int) -> None:
        """Make rows `[self.rows, rows)` exist, initialised N(0, init_std)."""
        if rows <= self.rows:
            return
        if rows > self.capacity:
            capacity = max(rows, int(self.capacity * GROWTH))
            weight = torch.zeros(capacity, self.dim)
            weight[: self.rows] = self.weight
            accumulator = torch.zeros(capacity)
            accumulator[: self.rows] = self.accumulator
            self._weight, self._accumulator = weight, accumulator
        fresh = torch.randn(rows - self.rows, self.dim, generator=self._generator)
        self._weight[self.rows : rows] = fresh * self.init_std
        self.rows = rows
