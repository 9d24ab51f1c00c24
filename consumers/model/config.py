"""Frozen hyper-parameters of the learner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LossName = Literal["bpr", "triplet"]
OptimizerName = Literal["adagrad", "sgd"]
TopNIndexName = Literal["auto", "exact", "ann"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Matrix factorisation trained by pairwise (BPR or triplet) updates.

    The item table is one matrix: positive and negative rows both come from it.
    Each positive is paired with the highest-scoring of `negatives` uniform draws
    the user has not watched (1: plain uniform sampling); each micro-batch is
    learned `passes` times, with fresh negatives every pass.
    """

    dim: int = 64
    loss: LossName = "bpr"
    margin: float = 1.0
    optimizer: OptimizerName = "adagrad"
    learning_rate: float = 0.1
    l2: float = 1e-4
    init_std: float = 0.1
    negatives: int = 8
    passes: int = 2
    top_n: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError("dim must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        if self.l2 < 0 or self.init_std < 0 or self.margin < 0:
            raise ValueError("l2, init_std and margin must be >= 0")
        if self.top_n < 1:
            raise ValueError("top_n must be >= 1")
        if self.negatives < 1 or self.passes < 1:
            raise ValueError("negatives and passes must be >= 1")


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """How top-N lists are searched (not part of the learned state: checkpoints ignore it).

    The full search is exact (one matmul + top-k) with `index="exact"`, an HNSW graph
    (consumers/model/ann.py) with `index="ann"`, and with `index="auto"` exact below
    `ann_min_items` items and HNSW from there (the crossover measured by
    benchmarks/topn.py). The graph re-inserts the items moved since its last refresh
    every `refresh_every` searches (publishes), plus `sweep_rows` further rows in a
    rolling sweep. On top of either, `candidates` > 0 turns on incremental lists
    (consumers/model/incremental.py): a user's list is re-scored from the last full
    search's top `candidates` plus the items moved in the last `recent_publishes`
    publishes, with a full search every `full_pass_every`-th touch or when a bound says
    an item outside could enter; 0 searches in full every time.
    """

    index: TopNIndexName = "auto"
    ann_min_items: int = 100_000
    refresh_every: int = 10
    sweep_rows: int = 2_000
    m: int = 16
    ef_construction: int = 64
    ef_search: int = 96  # recall@10 >= 0.95 at 1M items (benchmarks/topn.py)
    overfetch: float = 1.5
    candidates: int = 0  # off: at 20k items the lists cost 4x exact (benchmarks/README.md)
    full_pass_every: int = 8
    recent_publishes: int = 1

    def __post_init__(self) -> None:
        if self.ann_min_items < 1 or self.refresh_every < 1 or self.sweep_rows < 0:
            raise ValueError("ann_min_items and refresh_every must be >= 1, sweep_rows >= 0")
        if self.m < 2 or self.ef_construction < 1 or self.ef_search < 1 or self.overfetch < 1:
            raise ValueError("m >= 2, ef_construction, ef_search >= 1 and overfetch >= 1")
        if self.candidates < 0 or self.full_pass_every < 1 or self.recent_publishes < 1:
            raise ValueError("candidates >= 0, full_pass_every and recent_publishes >= 1")

    def approximate(self, items: int) -> bool:
        """Whether a full search over `items` items uses the HNSW graph."""
        return self.index == "ann" or (self.index == "auto" and items >= self.ann_min_items)
