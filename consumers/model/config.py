"""Frozen hyper-parameters of the learner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LossName = Literal["bpr", "triplet"]
OptimizerName = Literal["adagrad", "sgd"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Matrix factorisation trained by pairwise (BPR or triplet) updates.

    The item table is one matrix: positive and negative rows both come from it.
    """

    dim: int = 64
    loss: LossName = "bpr"
    margin: float = 1.0
    optimizer: OptimizerName = "adagrad"
    learning_rate: float = 0.1
    l2: float = 1e-4
    init_std: float = 0.1
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
