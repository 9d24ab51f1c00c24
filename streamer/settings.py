"""Wiring of `recstream produce`, from flags, `RECSTREAM_*` environment variables or defaults."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.events import VIEWS_TOPIC


def _json_object(value: Any) -> Any:
    """Flags arrive as text: parse a JSON object (RECSTREAM_* variables are parsed already)."""
    return json.loads(value) if isinstance(value, str) else value


# Extra kafka-python client options, passed through as given: SASL/SSL
# (security_protocol, sasl_mechanism, sasl_plain_username, ssl_cafile, ...), timeouts.
KafkaOptions = Annotated[dict[str, Any], BeforeValidator(_json_object)]


class ProduceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="forbid")

    bootstrap: str = "127.0.0.1:9092"
    kafka_options: KafkaOptions = Field(default_factory=dict)
    topic: str = VIEWS_TOPIC
    source: str = "synthetic"
    rate: float | None = Field(None, gt=0)
    events: int | None = Field(None, ge=1)
    progress: bool = True
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = Field(9401, ge=0, le=65535)
