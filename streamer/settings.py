"""Wiring of `recstream produce`, from flags, `RECSTREAM_*` environment variables or defaults.

Each field's `description` is its line in `--help`, written once here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.events import ITEMS_TOPIC, USERS_TOPIC, VIEWS_TOPIC


def _json_object(value: Any) -> Any:
    """Flags arrive as text: parse a JSON object (RECSTREAM_* variables are parsed already)."""
    return json.loads(value) if isinstance(value, str) else value


class ClientOptions(dict[str, Any]):
    """Options passed to a client as given; a password among them never shows in a repr
    (settings errors, logs)."""

    def __repr__(self) -> str:
        shown = {k: "**********" if "password" in k.lower() else v for k, v in self.items()}
        return repr(shown)


# A JSON object from a flag, an environment variable or a TOML table; for a client's
# options, one whose repr hides passwords.
JsonText = Annotated[dict[str, Any], BeforeValidator(_json_object)]
JsonObject = Annotated[JsonText, AfterValidator(ClientOptions)]

# The lines of the settings that producers and learners share.
BOOTSTRAP: Final = "Kafka brokers to connect to, host:port[,host:port...]"
KAFKA_OPTIONS: Final = (
    "extra kafka-python client options as a JSON object (security_protocol, sasl_mechanism, "
    "sasl_plain_username, ssl_cafile, ...)"
)
KAFKA_PASSWORD: Final = "the Kafka SASL password"
ALLOW_PLAINTEXT_SECRETS: Final = "send passwords over plain connections to hosts beyond loopback"


def kafka_client_options(options: dict[str, Any], password: SecretStr | None) -> dict[str, Any]:
    """kafka-python options as given (SASL/SSL: security_protocol, sasl_mechanism,
    sasl_plain_username, ssl_cafile, ...), with the SASL password from its secret."""
    if password is None:
        return dict(options)
    return {**options, "sasl_plain_password": password.get_secret_value()}


class ProduceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="forbid")

    bootstrap: str = Field("127.0.0.1:9092", description=BOOTSTRAP)
    kafka_options: JsonObject = Field(default_factory=dict, description=KAFKA_OPTIONS)
    kafka_password: SecretStr | None = Field(None, description=KAFKA_PASSWORD)
    allow_plaintext_secrets: bool = Field(False, description=ALLOW_PLAINTEXT_SECRETS)
    topic: str = Field(VIEWS_TOPIC, description="Kafka topic the view events are published to")
    source: str = Field(
        "synthetic",
        description="what to replay: synthetic, synthetic:drift (tastes change half way) or "
        "movielens:PATH (ml-100k, ml-1m or a recbole .inter file; movielens:ml-100k "
        "downloads it)",
    )
    rate: float | None = Field(
        None, gt=0, description="events per second to send (unset: as fast as possible)"
    )
    events: int | None = Field(
        None, ge=1, description="stop after this many events (unset: the whole source)"
    )
    features: bool = Field(
        True,
        description="first publish the source's item and user features to the items and "
        "users topics (true or false)",
    )
    items_topic: str = Field(ITEMS_TOPIC, description="compacted topic of item features")
    users_topic: str = Field(USERS_TOPIC, description="compacted topic of user features")
    progress: bool = Field(True, description="show a progress bar (true or false)")
    metrics_addr: str = Field(
        "127.0.0.1", description="address of /metrics (0.0.0.0: every interface)"
    )
    metrics_port: int = Field(
        9401, ge=0, le=65535, description="port of the producer's /metrics (0: any free port)"
    )
