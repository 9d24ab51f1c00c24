"""The models `--model` chooses from: each name with its config type, what builds it and
its line in --help.

Adding a model: implement `Model` (consumers/model/base.py) and a frozen config
dataclass, add its name to `ModelName` and its entry to `MODELS`;
tests/test_model_contract.py then runs the shared suite over it, and `TrainingSettings`
fills its config from the flags whose names match its fields.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

import torch
from pydantic import TypeAdapter

from consumers.model.base import Config, Model
from consumers.model.config import ModelConfig, SearchConfig
from consumers.model.featured import ContentConfig, ContentModel, FeaturesConfig, FeaturesModel
from consumers.model.mf import MatrixFactorization
from consumers.model.mlp import MlpConfig, MlpRanker
from consumers.model.rating import BiasedRating, RatingConfig
from consumers.model.sequence import SequenceConfig, SequenceModel
from consumers.model.storage import Storage, local_storage
from consumers.model.tower import HistoryConfig, HistoryTower

ModelName = Literal["mf", "history", "rating", "sequence", "mlp", "features", "content"]
StorageFactory = Callable[[ModelConfig, torch.Generator], Storage]
ModelFactory = Callable[[Any, StorageFactory, SearchConfig | None], Model]


@dataclass(frozen=True, slots=True)
class ModelChoice:
    config: type[Config]
    build: ModelFactory
    description: str
    shares_tables: bool = False  # runs with --workers > 1 (tables in the host's shared memory)


def _mf(config: ModelConfig, storage: StorageFactory, search: SearchConfig | None) -> Model:
    return MatrixFactorization(config, storage, search)


def _history(config: HistoryConfig, _: StorageFactory, search: SearchConfig | None) -> Model:
    return HistoryTower(config, search)


def _rating(config: RatingConfig, _: StorageFactory, search: SearchConfig | None) -> Model:
    return BiasedRating(config, search)


def _sequence(config: SequenceConfig, _: StorageFactory, search: SearchConfig | None) -> Model:
    return SequenceModel(config, search)


def _mlp(config: MlpConfig, _: StorageFactory, search: SearchConfig | None) -> Model:
    return MlpRanker(config, search)


def _features(config: FeaturesConfig, _: StorageFactory, search: SearchConfig | None) -> Model:
    return FeaturesModel(config, search)


def _content(config: ContentConfig, _: StorageFactory, search: SearchConfig | None) -> Model:
    return ContentModel(config, search)


MODELS: Final[Mapping[ModelName, ModelChoice]] = {
    "mf": ModelChoice(
        ModelConfig,
        _mf,
        "matrix factorisation learned by pairwise (BPR or triplet) updates",
        shares_tables=True,
    ),
    "history": ModelChoice(
        HistoryConfig,
        _history,
        "YouTube-style tower: a user is an MLP over their last views' item embeddings, "
        "learned by sampled softmax",
    ),
    "rating": ModelChoice(
        RatingConfig, _rating, "biased MF regressed on explicit ratings, lists by predicted rating"
    ),
    "sequence": ModelChoice(
        SequenceConfig,
        _sequence,
        "GRU4Rec-style next-item model: a GRU state per user advanced by each view",
    ),
    "mlp": ModelChoice(
        MlpConfig,
        _mlp,
        "two stages: mf retrieves candidates, an MLP over user and item embeddings "
        "(triplet loss) ranks them",
    ),
    "features": ModelChoice(
        FeaturesConfig,
        _features,
        "id plus mean feature embeddings (the items and users topics) for users and items, "
        "learned by BPR: entities with features and no views have vectors",
    ),
    "content": ModelChoice(
        ContentConfig,
        _content,
        "the features model with a text CNN that places items by their title before their "
        "first view",
    ),
}


def make_config(
    name: ModelName, values: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> Config:
    """`name`'s config from those of `values` it has a field for (the others are its
    defaults; values of None count as absent), then `options`, each of which must be one
    of its fields. Every value is checked against its field's type and the config's own
    checks: a ValueError names the field."""
    kind = MODELS[name].config
    known = {field.name for field in fields(kind)}
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise ValueError(
            f"the {name} model has no setting {', '.join(unknown)} (its settings: "
            f"{', '.join(sorted(known))})"
        )
    chosen = {key: value for key, value in values.items() if key in known and value is not None}
    config: Config = TypeAdapter(kind).validate_python({**chosen, **(options or {})})
    return config


def own_defaults(setting: str) -> str:
    """Each model's default of `setting` (the models that have it), for --help."""
    return ", ".join(
        f"{name} {field.default}"
        for name, choice in MODELS.items()
        for field in fields(choice.config)
        if field.name == setting
    )


def settings_beyond(flags: Collection[str]) -> str:
    """Each model's settings that are not in `flags`, with their defaults, for --help."""
    return "; ".join(
        f"{name}: "
        + ", ".join(
            f"{field.name} {field.default}"
            for field in fields(choice.config)
            if field.name not in flags
        )
        for name, choice in MODELS.items()
    )


def make_model(
    name: ModelName,
    config: Config | None = None,
    storage: StorageFactory = local_storage,
    search: SearchConfig | None = None,
) -> Model:
    """The model registered as `name` (its default config unless given), its rows in
    `storage` (models that share tables only), its top-N searched by `search`."""
    choice = MODELS[name]
    chosen = choice.config() if config is None else config
    if not isinstance(chosen, choice.config):
        raise TypeError(
            f"model {name} takes a {choice.config.__name__}, not {type(chosen).__name__}"
        )
    return choice.build(chosen, storage, search)


def described() -> str:
    """Every model's name and description, for --help."""
    return "; ".join(f"{name}: {choice.description}" for name, choice in MODELS.items())
