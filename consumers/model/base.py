"""What every model implements: a batch of rows in, a step out; rankings and vectors for
publishing; tensors for checkpoints.

A model sees rows, never events or raw ids: its registries map ids to rows, and the
online learner (consumers/learner.py) and the publisher (consumers/publisher.py) use a
model only through `Model`. `MatrixFactorization` (consumers/model/mf.py) is the first
implementation; tests/test_model_contract.py runs one suite over every registered one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import Field, dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from torch import Tensor

from consumers.model.history import History
from consumers.model.storage import Registry
from streamer.events import Id

Rows = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Batch:
    """One micro-batch of decoded views, as rows: entry i of every array is view i.

    `ratings` are NaN where a view carries none; `features` (name -> one value per
    view) are there for models that use them.
    """

    users: Rows
    items: Rows
    timestamps: npt.NDArray[np.float64]
    weights: Floats
    ratings: Floats
    features: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    @classmethod
    def of_views(cls, users: Rows, items: Rows, weights: Floats | None = None) -> Batch:
        """Views without times, ratings or features (weight 1 unless given)."""
        size = users.size
        return cls(
            users,
            items,
            np.zeros(size, dtype=np.float64),
            np.ones(size, dtype=np.float32) if weights is None else weights,
            np.full(size, np.nan, dtype=np.float32),
        )


def _no_errors() -> Floats:
    return np.zeros(0, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Step:
    """What `learn` did: the first pass's weighted mean loss (nan if none), which views
    were learned (the others were skipped as non-finite), the negative rows used, and,
    from models that predict ratings, predicted minus actual rating of each rated view,
    predicted before the batch was learned (prequential)."""

    loss: float
    learned: npt.NDArray[np.bool_]
    negatives: Rows
    rating_errors: Floats = field(default_factory=_no_errors)


class Ranking(NamedTuple):
    """Top-n per query row, best first: float32 scores (-inf in a slot left empty, whose
    item row is then meaningless) and int64 item rows, both [queries, n]."""

    scores: Floats
    items: Rows


@dataclass(frozen=True, slots=True)
class TableSize:
    """Rows in use and rows reserved of one table."""

    rows: int
    capacity: int


class Config(Protocol):
    """A model's frozen hyper-parameters: a dataclass, whose fields a checkpoint records."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    @property
    def dim(self) -> int:
        """Length of the published user and item vectors."""

    @property
    def top_n(self) -> int:
        """Length of every published list."""


class Model(Protocol):
    """An online recommender model: learns batches of rows, ranks items for users and
    items, and restores exactly from its own `state()`.

    Invariants every implementation keeps (tests/test_model_contract.py): learning
    leaves every row finite; a view joins its user's `history`, which `recommend`
    excludes; the same config, seed and batches give the same tables.
    """

    @property
    def name(self) -> str:
        """What publications and checkpoints call this model ("mf-bpr")."""

    @property
    def config(self) -> Config: ...

    @property
    def users(self) -> Registry:
        """Raw user ids to rows (possibly shared by a host's workers)."""

    @property
    def items(self) -> Registry:
        """Raw item ids to rows (possibly shared by a host's workers)."""

    @property
    def history(self) -> History:
        """The item rows each user row has watched."""

    @property
    def skipped_events(self) -> int:
        """Views not learned because their update was not finite, since start."""

    def learn(self, batch: Batch) -> Step: ...

    def forget_user(self, raw: Id) -> int | None:
        """Drop everything learned about a user; the row they had, if any."""

    def recommend(self, user_rows: Rows, n: int) -> Ranking:
        """Each user's top `n` items, their watched ones excluded."""

    def similar(self, item_rows: Rows, n: int) -> Ranking:
        """Each item's `n` most similar items, itself excluded."""

    def score(self, user_rows: Rows, item_rows: Rows) -> Floats:
        """Every user's score of every candidate item: [users, items]."""

    def user_vectors(self, user_rows: Rows) -> Floats:
        """The published vectors of these users: [users, dim]."""

    def item_vectors(self, item_rows: Rows) -> Floats:
        """The published vectors of these items: [items, dim]."""

    def items_moved(self, item_rows: Collection[int]) -> None:
        """Tell any search index which item rows changed since the last ranking."""

    def table_sizes(self) -> Mapping[str, TableSize]:
        """Size of each table, by name ("user", "item")."""

    def state(self) -> dict[str, Tensor]:
        """Every tensor needed to resume exactly (random state included)."""

    def load_state(self, tensors: dict[str, Tensor], shared: bool = True) -> None:
        """Restore `state()`; `shared=False` leaves what a host's workers share (their
        registries and tables, restored once for all of them) alone."""
