"""Wiring of `recstream produce`, from flags, `RECSTREAM_*` environment variables or defaults."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.events import VIEWS_TOPIC


def _json_object(value: Any) -> Any:
    """Flags arrive as text: parse a JSON object (RECSTREAM_* variables are parsed already)."""
    return json.loads(value) if isinstance(value, str) else value


# A JSON object from a flag, an environment variable or a TOML table.
JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object)]


def kafka_client_options(options: dict[str, Any], password: SecretStr | None) -> dict[str, Any]:
    """kafka-python options as given (SASL/SSL: security_protocol, sasl_mechanism,
    sasl_plain_username, ssl_cafile, ...), with the SASL password from its secret."""
    if password is None:
        return dict(options)
    return {**options, "sasl_plain_password": password.get_secret_value()}


class ProduceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="forbid")

    bootstrap: str = "127.0.0.1:9092"
    kafka_options: JsonObject = Field(default_factory=dict)
    kafka_password: SecretStr | None = None
    allow_plaintext_secrets: bool = Field(
        False, description="send passwords over plain connections to hosts beyond loopback"
    )
    topic: str = VIEWS_TOPIC
    source: str = "synthetic"
    rate: float | None = Field(None, gt=0)
    events: int | None = Field(None, ge=1)
    progress: bool = True
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = Field(9401, ge=0, le=65535)
