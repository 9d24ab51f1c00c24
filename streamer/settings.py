"""Wiring of `recstream produce`, from flags, `RECSTREAM_*` environment variables or defaults."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.events import VIEWS_TOPIC


class ProduceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="forbid")

    bootstrap: str = "127.0.0.1:9092"
    topic: str = VIEWS_TOPIC
    source: str = "synthetic"
    rate: float | None = Field(None, gt=0)
    events: int | None = Field(None, ge=1)
    progress: bool = True
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = Field(9401, ge=0, le=65535)
