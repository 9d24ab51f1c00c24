"""The models `--model` chooses from: each name with what builds it and its line in --help.

Adding a model: implement `Model` (consumers/model/base.py), add its name to
`ModelName` and its entry to `MODELS`; tests/test_model_contract.py then runs the
shared suite over it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import torch

from consumers.model.base import Model
from consumers.model.config import ModelConfig, SearchConfig
from consumers.model.mf import MatrixFactorization
from consumers.model.storage import Storage, local_storage

ModelName = Literal["mf"]
StorageFactory = Callable[[ModelConfig, torch.Generator], Storage]
ModelFactory = Callable[[ModelConfig, StorageFactory, SearchConfig | None], Model]


@dataclass(frozen=True, slots=True)
class ModelChoice:
    build: ModelFactory
    description: str


MODELS: Final[Mapping[ModelName, ModelChoice]] = {
    "mf": ModelChoice(
        MatrixFactorization, "matrix factorisation learned by pairwise (BPR or triplet) updates"
    ),
}


def make_model(
    name: ModelName,
    config: ModelConfig,
    storage: StorageFactory = local_storage,
    search: SearchConfig | None = None,
) -> Model:
    """The model registered as `name`, its rows in `storage`, its top-N searched by `search`."""
    return MODELS[name].build(config, storage, search)


def described() -> str:
    """Every model's name and description, for --help."""
    return "; ".join(f"{name}: {choice.description}" for name, choice in MODELS.items())
