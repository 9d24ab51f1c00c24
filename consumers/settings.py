"""Process wiring and model knobs, from flags, `RECSTREAM_*` environment variables or defaults.

`*Settings` are validated at start; the chosen model's config (`ModelConfig` for mf,
consumers/model/factory.py for the others) is the frozen model part, filled from the
flags named like its fields. Each field's `description` is its line in `--help`,
written once here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal, Self
from urllib.parse import quote

import torch
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.model.base import Config
from consumers.model.config import LossName, OptimizerName, SearchConfig, TopNIndexName
from consumers.model.factory import MODELS, ModelName, described, make_config, own_defaults
from consumers.model.neural import DeviceName
from consumers.sinks.lease import DEFAULT_TERM_S
from consumers.sinks.schema import DEFAULT_PREFIX
from streamer.events import ITEMS_TOPIC, USERS_TOPIC, VIEWS_TOPIC
from streamer.settings import (
    ALLOW_PLAINTEXT_SECRETS,
    BOOTSTRAP,
    KAFKA_OPTIONS,
    KAFKA_PASSWORD,
    JsonObject,
    JsonText,
)

PREFIX: Final = "prefix of every Redis key (one per deployment or model variant)"
REDIS_OPTIONS: Final = (
    "extra redis-py connection options as a JSON object (ssl_ca_certs, socket_timeout, ...)"
)
REDIS_PASSWORD: Final = "the Redis password (AUTH; the user goes in the URL)"
SOURCE: Final = (
    "what to learn from: synthetic, synthetic:drift (tastes change half way) or "
    "movielens:PATH (ml-100k, ml-1m or a recbole .inter file; movielens:ml-100k downloads it)"
)
PLOT: Final = "draw online HR@10 and throughput over the run to this PNG"

AUTO: Final = "auto"  # `checkpoint_dir`: one directory per group and prefix under the state dir
OFF: Final = "none"  # `checkpoint_dir`: no checkpoints, no offset commits


def state_home(state_dir: str | None) -> Path:
    """Where learners keep state by default: `state_dir`, else the XDG state directory."""
    if state_dir:
        return Path(state_dir)
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "recstream"


def default_checkpoint_dir(state_dir: str | None, group: str, prefix: str) -> Path:
    """One directory per consumer group and key prefix, so that learners of different
    groups or models never read each other's checkpoints (each name quoted: no clash)."""
    return state_home(state_dir) / f"{quote(group, safe='')}@{quote(prefix, safe='')}"


def _field_error(error: ErrorDetails) -> str:
    """`field: what is wrong` (a config's own check names its field in the message)."""
    message = error["msg"].removeprefix("Value error, ")
    field = ".".join(map(str, error["loc"]))
    return f"{field}: {message}" if field else message


def _models_own(
    setting: str, says: str, *, gt: float | None = None, ge: float | None = None
) -> Any:
    """A flag for a model setting each model defaults itself: unset, the model's own."""
    return Field(
        None, gt=gt, ge=ge, description=f"{says} (unset: the model's own: {own_defaults(setting)})"
    )


class TrainingSettings(BaseSettings):
    """What every process that learns shares: the model and its micro-batches."""

    # `model_options` is ours, not pydantic's: no "model_" namespace to protect (older
    # pydantic releases warn about it otherwise)
    model_config = SettingsConfigDict(
        env_prefix="RECSTREAM_", frozen=True, extra="forbid", protected_namespaces=()
    )

    model: ModelName = Field("mf", description=f"which model learns ({described()})")
    dim: int = Field(64, ge=1, le=4096, description="length of every user and item vector")
    loss: LossName = Field(
        "bpr", description="mf's training loss: bpr (pairwise logistic) or triplet (margin)"
    )
    optimizer: OptimizerName = Field(
        "adagrad",
        description="how mf's rows are updated: adagrad (per-row step sizes) or sgd (the "
        "other models: Adam)",
    )
    learning_rate: float | None = _models_own("learning_rate", "step size of every update", gt=0)
    l2: float | None = _models_own("l2", "L2 penalty on the rows an update touches", ge=0)
    negatives: int = Field(
        8,
        ge=1,
        description="items drawn per view: mf and mlp learn against the hardest unwatched "
        "one, features and content against each",
    )
    passes: int = Field(2, ge=1, description="mf's steps on each micro-batch, fresh negatives each")
    top_n: int = Field(
        20, ge=1, le=1000, description="length of every published list (top, similar, popular)"
    )
    seed: int = Field(0, description="random seed of initialisation and negative sampling")
    device: DeviceName = Field(
        "cpu", description="where the torch-trained models (all but mf) learn: cpu or cuda"
    )
    history_length: int | None = _models_own(
        "history_length", "history model: the last views whose item embeddings make a user", ge=1
    )
    sampled_negatives: int | None = _models_own(
        "sampled_negatives",
        "history and sequence models: uniform negatives per micro-batch (history: besides "
        "the batch's items)",
        ge=0,
    )
    hidden: int | None = _models_own(
        "hidden", "history model: width of the residual MLP's layer", ge=1
    )
    batch_size: int = Field(512, ge=1, description="most events learned as one micro-batch")
    max_wait_s: float = Field(
        0.1,
        ge=0,
        description="seconds a partial micro-batch waits for more events",
    )
    prefix: str = Field(DEFAULT_PREFIX, description=PREFIX)
    threads: int = Field(1, ge=1, description="CPU threads torch may use in this process")
    publish_interval_s: float = Field(
        0.0, ge=0, description="seconds between publishes (0: publish every batch)"
    )
    similar_interval_s: float = Field(
        1.0, ge=0, description="seconds between refreshes of a watched item's similar list"
    )
    topn_index: TopNIndexName = Field(
        "auto",
        description="how top-N lists are searched in full: auto (exact below --ann-min-items "
        "items, HNSW from there), exact, or ann (HNSW at every size)",
    )
    ann_min_items: int = Field(
        100_000, ge=1, description="catalogue size from which auto searches HNSW, not exact"
    )
    topn_candidates: int = Field(
        0,
        ge=0,
        description="items kept per user from a full search and re-scored on the next "
        "touches, with the items just moved (0: a full search every publish)",
    )
    topn_full_every: int = Field(
        8, ge=1, description="a user's full search runs at least every this many touches"
    )
    ann_refresh_every: int = Field(10, ge=1, description="publishes between ANN refreshes")
    ann_ef: int = Field(
        96,
        ge=1,
        description="HNSW search breadth (recall@10 at 1M items: 64 -> 0.956, 96 -> 0.976)",
    )

    model_options: JsonText = Field(
        default_factory=dict,
        description="the chosen model's settings that have no flag, as a JSON object, e.g. "
        '{"frequency_half_life": 5000} for history (each model\'s are listed below)',
    )

    @model_validator(mode="after")
    def _model_options_fit_the_model(self) -> Self:
        flagged = sorted(self.model_options.keys() & type(self).model_fields.keys())
        if flagged:
            raise ValueError(
                f"--model-options: {', '.join(flagged)} has a flag of its own; set it there"
            )
        try:
            self.hyper_parameters()
        except ValidationError as error:  # a value of the wrong type: name the field
            raise ValueError("; ".join(map(_field_error, error.errors()))) from error
        return self

    def hyper_parameters(self) -> Config:
        """The chosen model's config: each of its fields from the flag of that name, or
        from `model_options`."""
        return make_config(
            self.model, self.model_dump(exclude={"model_options"}), self.model_options
        )

    def search(self) -> SearchConfig:
        return SearchConfig(
            index=self.topn_index,
            ann_min_items=self.ann_min_items,
            refresh_every=self.ann_refresh_every,
            ef_search=self.ann_ef,
            candidates=self.topn_candidates,
            full_pass_every=self.topn_full_every,
        )

    def publishing(self) -> dict[str, Any]:
        """The `Publisher`'s intervals."""
        return {
            "publish_interval_s": self.publish_interval_s,
            "similar_interval_s": self.similar_interval_s,
        }

    def pin_threads(self) -> None:
        """One process, `threads` cores: oversubscribed BLAS threads collapse throughput."""
        torch.set_num_threads(self.threads)


class ConsumeSettings(TrainingSettings):
    bootstrap: str = Field("127.0.0.1:9092", description=BOOTSTRAP)
    publish_interval_s: float = Field(
        0.1,
        ge=0,
        description="seconds between publishes (0: publish every batch); a user changed by "
        "several batches in one is written once. The default learned 1.3-1.8x the events/s "
        "of 0 (2 workers); its cost: a list appears up to 0.1 s later at the same load, "
        "sooner near saturation (benchmarks/README.md, coalescing.py)",
    )
    kafka_options: JsonObject = Field(default_factory=dict, description=KAFKA_OPTIONS)
    kafka_password: SecretStr | None = Field(None, description=KAFKA_PASSWORD)
    topic: str = Field(VIEWS_TOPIC, description="Kafka topic of the view events to learn from")
    users_topic: str | None = Field(
        USERS_TOPIC,
        description="compacted topic of user records: a user's features, or a tombstone "
        "that forgets that user (empty: read none)",
    )
    items_topic: str | None = Field(
        ITEMS_TOPIC,
        description="compacted topic of item records: an item's features and text "
        "(empty: read none)",
    )
    checkpoint_dir: str | None = Field(
        AUTO,
        min_length=1,
        description="where checkpoints (model, id maps, offsets) go; a restart resumes from "
        f"the newest. {AUTO}: a directory per group and prefix under --state-dir; {OFF}: no "
        "checkpoints and no offset commits, so a restart re-learns the retained log",
    )
    state_dir: str | None = Field(
        None,
        description=f"where --checkpoint-dir {AUTO} puts its directories (unset: "
        "$XDG_STATE_HOME/recstream, else ~/.local/state/recstream)",
    )
    checkpoint_every_events: int | None = Field(
        100_000, ge=1, description="records between checkpoints"
    )
    checkpoint_every_seconds: float | None = Field(
        60.0, gt=0, description="seconds between checkpoints while records arrive"
    )
    checkpoint_keep: int = Field(3, ge=1, description="newest checkpoints kept on disk")
    workers: int = Field(
        1, ge=1, le=64, description="learner processes on this host, sharing their tables"
    )
    max_users: int = Field(
        10_000_000, ge=1, description="user table rows reserved with --workers > 1 (sparse)"
    )
    max_items: int = Field(
        1_000_000, ge=1, description="item table rows reserved with --workers > 1 (sparse)"
    )
    shared_dir: str | None = Field(
        None, description="where shared tables live with --workers > 1 (unset: /dev/shm)"
    )
    group: str = Field(
        "recstream-learner", description="Kafka consumer group (the learners of one model)"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="where a group without committed offsets starts: earliest (the whole "
        "retained log) or latest",
    )
    redis: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis the lists are published to: redis://[user@]host:port/db, "
        "rediss:// for TLS",
    )
    redis_options: JsonObject = Field(default_factory=dict, description=REDIS_OPTIONS)
    redis_password: SecretStr | None = Field(None, description=REDIS_PASSWORD)
    allow_plaintext_secrets: bool = Field(False, description=ALLOW_PLAINTEXT_SECRETS)
    metrics_addr: str = Field(
        "127.0.0.1", description="address of /metrics and /health (0.0.0.0: every interface)"
    )
    metrics_port: int = Field(
        9400, ge=0, le=65535, description="port of /metrics and /health (worker i: port + i)"
    )
    owner_lease_s: float = Field(
        DEFAULT_TERM_S,
        ge=1,
        description="seconds the prefix's owner lease lasts: a dead learner's lapses after it",
    )

    def topics(self) -> list[str]:
        """What the learner reads: the views topic first, then the entity topics set."""
        return [self.topic] + [t for t in (self.users_topic, self.items_topic) if t]

    @model_validator(mode="after")
    def _workers_share_tables(self) -> ConsumeSettings:
        if self.workers > 1 and not MODELS[self.model].shares_tables:
            raise ValueError(
                f"--workers {self.workers}: the {self.model} model keeps its parameters in one "
                "process (only mf shares its tables between workers); run it with --workers 1"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _resolve_checkpoint_dir(cls, data: Any) -> Any:
        """`auto` becomes the group's and prefix's directory, `none` turns checkpoints off:
        afterwards `checkpoint_dir` is a directory, or None for off."""
        if not isinstance(data, dict):
            return data
        chosen = data.get("checkpoint_dir", AUTO)
        if chosen == OFF:
            return {**data, "checkpoint_dir": None}
        if chosen == AUTO:
            fields = cls.model_fields
            group = data.get("group", fields["group"].default)
            prefix = data.get("prefix", fields["prefix"].default)
            directory = default_checkpoint_dir(data.get("state_dir"), str(group), str(prefix))
            return {**data, "checkpoint_dir": str(directory)}
        return data


class DemoSettings(TrainingSettings):
    source: str = Field("synthetic", description=SOURCE)
    events: int | None = Field(
        None, ge=1, description="stop after this many events (unset: the whole source)"
    )
    json_path: str | None = Field(None, description="also write the report to this JSON file")
    plot_path: str | None = Field(None, description=PLOT)
    users_shown: int = Field(3, ge=0, description="users whose lists are printed at the end")


class ReportSettings(DemoSettings):
    """`recstream report`: the demo run, drawn as a PNG."""

    plot_path: str | None = Field("recstream-report.png", description=PLOT)


class RecommendSettings(BaseSettings):
    """Where `recstream recommend` reads lists from."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="ignore")

    redis: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis the lists are read from: redis://[user@]host:port/db, rediss:// for TLS",
    )
    redis_options: JsonObject = Field(default_factory=dict, description=REDIS_OPTIONS)
    redis_password: SecretStr | None = Field(None, description=REDIS_PASSWORD)
    allow_plaintext_secrets: bool = Field(False, description=ALLOW_PLAINTEXT_SECRETS)
    prefix: str = Field(DEFAULT_PREFIX, description=PREFIX)
