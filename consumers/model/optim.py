"""Adam over the rows of growing tables: what the torch-trained models learn with.

A parameter is a `[rows, *shape]` tensor; `step(rows, grads)` moves only the rows
given, each with its own step count for the bias correction (lazy Adam, as torch's
`SparseAdam`). A dense parameter (a layer's weight) is a table whose rows all move
together, so one code path serves embeddings that grow with the catalogue and
fixed-size layers alike, and the optimizer state is plain tensors a checkpoint holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

GROWTH = 1.5
MIN_CAPACITY = 1024


@dataclass(frozen=True, slots=True)
class AdamSettings:
    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0  # L2 added to the gradient of the rows that move


class AdamRows:
    """A `[rows, *shape]` parameter with Adam's moments and a step count per row.

    Invariant: `weight`, `first`, `second` and `steps` have the same number of live
    rows; rows past `rows` (reserved capacity) are never read.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        init: Tensor,
        device: torch.device,
    ) -> None:
        """`init` gives the first rows (`[rows, *shape]`); later rows come from `grow_to`."""
        self.shape = shape
        self.device = device
        self.rows = 0
        self._weight = torch.zeros((0, *shape), device=device)
        self._first = torch.zeros_like(self._weight)
        self._second = torch.zeros_like(self._weight)
        self._steps = torch.zeros(0, device=device)
        self.append(init)

    @property
    def weight(self) -> Tensor:
        """The live rows (a view: writes go to the table)."""
        return self._weight[: self.rows]

    @property
    def capacity(self) -> int:
        return int(self._weight.shape[0])

    def append(self, values: Tensor) -> None:
        """Add rows with these initial values (and zero optimizer state)."""
        rows = self.rows + values.shape[0]
        if rows > self.capacity:
            capacity = max(rows, int(self.capacity * GROWTH), MIN_CAPACITY)
            self._weight, self._first, self._second = (
                _grown(table, capacity, self.rows)
                for table in (self._weight, self._first, self._second)
            )
            self._steps = _grown(self._steps, capacity, self.rows)
        self._weight[self.rows : rows] = values.to(self.device)
        self.rows = rows

    def step(self, rows: Tensor, grads: Tensor, settings: AdamSettings) -> None:
        """One Adam step on `rows` (distinct) with their gradients `[len(rows), *shape]`."""
        weight, first, second = self._weight[rows], self._first[rows], self._second[rows]
        if settings.weight_decay:
            grads = grads + settings.weight_decay * weight
        steps = self._steps[rows] + 1
        first = settings.beta1 * first + (1 - settings.beta1) * grads
        second = settings.beta2 * second + (1 - settings.beta2) * grads * grads
        expand = (-1,) + (1,) * len(self.shape)
        correction1 = (1 - settings.beta1**steps).view(expand)
        correction2 = (1 - settings.beta2**steps).view(expand)
        update = (first / correction1) / ((second / correction2).sqrt() + settings.eps)
        self._weight[rows] = weight - settings.learning_rate * update
        self._first[rows], self._second[rows], self._steps[rows] = first, second, steps

    def step_all(self, grads: Tensor, settings: AdamSettings) -> None:
        """A dense step: every live row moves."""
        self.step(torch.arange(self.rows, device=self.device), grads, settings)

    def zero_rows(self, rows: Tensor) -> None:
        """Reset rows to zero, optimizer state included (a forgotten entity)."""
        for table in (self._weight, self._first, self._second, self._steps):
            table[rows] = 0

    def state(self, name: str) -> dict[str, Tensor]:
        live = slice(0, self.rows)
        return {
            f"{name}.weight": self._weight[live].cpu(),
            f"{name}.first": self._first[live].cpu(),
            f"{name}.second": self._second[live].cpu(),
            f"{name}.steps": self._steps[live].cpu(),
        }

    def load_state(self, tensors: dict[str, Tensor], name: str) -> None:
        self.rows = 0
        self._weight = torch.zeros((0, *self.shape), device=self.device)
        self._first, self._second = torch.zeros_like(self._weight), torch.zeros_like(self._weight)
        self._steps = torch.zeros(0, device=self.device)
        self.append(tensors[f"{name}.weight"])
        live = slice(0, self.rows)
        self._first[live] = tensors[f"{name}.first"].to(self.device)
        self._second[live] = tensors[f"{name}.second"].to(self.device)
        self._steps[live] = tensors[f"{name}.steps"].to(self.device)


def _grown(table: Tensor, capacity: int, rows: int) -> Tensor:
    bigger = torch.zeros((capacity, *table.shape[1:]), dtype=table.dtype, device=table.device)
    bigger[:rows] = table[:rows]
    return bigger
