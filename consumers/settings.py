"""Process wiring and model knobs, from flags, `RECSTREAM_*` environment variables or defaults.

`*Settings` are validated at start; `ModelConfig` is the frozen model part.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.model.config import (
    LossName,
    ModelConfig,
    OptimizerName,
    SearchConfig,
    TopNIndexName,
)
from consumers.sinks.lease import DEFAULT_TERM_S
from consumers.sinks.schema import DEFAULT_PREFIX
from streamer.events import USERS_TOPIC, VIEWS_TOPIC
from streamer.settings import JsonObject


class LearnerSettings(BaseSettings):
    """What every process that learns shares: the model and its micro-batches."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="forbid")

    dim: int = Field(64, ge=1, le=4096)
    loss: LossName = "bpr"
    optimizer: OptimizerName = "adagrad"
    learning_rate: float = Field(0.1, gt=0)
    l2: float = Field(1e-4, ge=0)
    negatives: int = Field(
        8, ge=1, description="uniform draws per positive; the hardest unwatched one is used"
    )
    passes: int = Field(2, ge=1, description="steps on each micro-batch, fresh negatives each")
    top_n: int = Field(20, ge=1, le=1000)
    seed: int = 0
    batch_size: int = Field(512, ge=1)
    max_wait_s: float = Field(0.1, ge=0)
    prefix: str = DEFAULT_PREFIX
    threads: int = Field(1, ge=1, description="torch intra-op threads of this process")
    publish_interval_s: float = Field(
        0.0, ge=0, description="publish at most once per interval (0: every batch)"
    )
    similar_interval_s: float = Field(
        1.0, ge=0, description="recompute watched items' similar lists at most this often"
    )
    topn_index: TopNIndexName = Field("exact", description="exact or ann (HNSW, hnswlib)")
    ann_min_items: int = Field(100_000, ge=1, description="items before ann replaces exact")
    ann_refresh_every: int = Field(10, ge=1, description="publishes between ANN refreshes")
    ann_ef: int = Field(
        96,
        ge=1,
        description="HNSW search breadth (recall@10 at 1M items: 64 -> 0.956, 96 -> 0.976)",
    )

    def model(self) -> ModelConfig:
        return ModelConfig(
            dim=self.dim,
            loss=self.loss,
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            l2=self.l2,
            negatives=self.negatives,
            passes=self.passes,
            top_n=self.top_n,
            seed=self.seed,
        )

    def search(self) -> SearchConfig:
        return SearchConfig(
            index=self.topn_index,
            ann_min_items=self.ann_min_items,
            refresh_every=self.ann_refresh_every,
            ef_search=self.ann_ef,
        )

    def publishing(self) -> dict[str, Any]:
        """`OnlineRecommender`'s publishing options."""
        return {
            "search": self.search(),
            "publish_interval_s": self.publish_interval_s,
            "similar_interval_s": self.similar_interval_s,
        }

    def pin_threads(self) -> None:
        """One process, `threads` cores: oversubscribed BLAS threads collapse throughput."""
        torch.set_num_threads(self.threads)

    @property
    def model_name(self) -> str:
        return f"mf-{self.loss}"


class ConsumeSettings(LearnerSettings):
    bootstrap: str = "127.0.0.1:9092"
    kafka_options: JsonObject = Field(default_factory=dict)
    kafka_password: SecretStr | None = None
    topic: str = VIEWS_TOPIC
    users_topic: str | None = USERS_TOPIC
    checkpoint_dir: str | None = None
    checkpoint_every_events: int | None = Field(100_000, ge=1)
    checkpoint_every_seconds: float | None = Field(60.0, gt=0)
    checkpoint_keep: int = Field(3, ge=1)
    workers: int = Field(1, ge=1, le=64, description="learner processes sharing the tables")
    max_users: int = Field(10_000_000, ge=1, description="shared table rows (--workers > 1)")
    max_items: int = Field(1_000_000, ge=1, description="shared table rows (--workers > 1)")
    shared_dir: str | None = Field(None, description="where shared tables live (/dev/shm)")
    group: str = "recstream-learner"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    redis: str = "redis://127.0.0.1:6379/0"
    redis_options: JsonObject = Field(default_factory=dict)
    redis_password: SecretStr | None = None
    allow_plaintext_secrets: bool = Field(
        False, description="send passwords over plain connections to hosts beyond loopback"
    )
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = Field(9400, ge=0, le=65535)
    owner_lease_s: float = Field(
        DEFAULT_TERM_S,
        ge=1,
        description="term of the prefix's owner lease: a dead learner's lapses after it",
    )


class DemoSettings(LearnerSettings):
    source: str = "synthetic"
    events: int | None = Field(None, ge=1)
    json_path: str | None = None
    plot_path: str | None = None
    users_shown: int = Field(3, ge=0)


class ReportSettings(DemoSettings):
    """`recstream report`: the demo run, drawn as a PNG."""

    plot_path: str | None = "recstream-report.png"


class RecommendSettings(BaseSettings):
    """Where `recstream recommend` reads lists from."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="ignore")

    redis: str = "redis://127.0.0.1:6379/0"
    redis_options: JsonObject = Field(default_factory=dict)
    redis_password: SecretStr | None = None
    allow_plaintext_secrets: bool = Field(
        False, description="send passwords over plain connections to hosts beyond loopback"
    )
    prefix: str = DEFAULT_PREFIX
