"""Settings from flags, environment and a TOML file, validated with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.cli import SettingsError, load_settings, main
from consumers.settings import ConsumeSettings


def test_flags_beat_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "recstream.toml"
    config.write_text(
        '[consume]\nbootstrap = "file:9092"\ntopic = "file.views"\ndim = 32\n'
        '[consume.kafka_options]\nsecurity_protocol = "SASL_SSL"\n'
    )
    monkeypatch.setenv("RECSTREAM_TOPIC", "env.views")
    monkeypatch.setenv("RECSTREAM_REDIS_PASSWORD", "s3cret")
    settings = load_settings("consume", {"config": str(config), "dim": "48"})
    assert isinstance(settings, ConsumeSettings)
    assert settings.bootstrap == "file:9092"
    assert settings.topic == "env.views"
    assert settings.dim == 48
    assert settings.kafka_options == {"security_protocol": "SASL_SSL"}
    assert settings.redis_password is not None
    assert "s3cret" not in repr(settings)


def test_json_options_from_a_flag() -> None:
    settings = load_settings("consume", {"kafka_options": '{"session_timeout_ms": 6000}'})
    assert isinstance(settings, ConsumeSettings)
    assert settings.kafka_options == {"session_timeout_ms": 6000}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"dim": "0"}, "dim"),
        ({"batch_size": "many"}, "batch_size"),
        ({"loss": "hinge"}, "loss"),
        ({"config": "/nonexistent.toml"}, "cannot read config file"),
    ],
)
def test_bad_settings_are_reported(flags: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings("consume", flags)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[produce]\nrat = 10\n")
    with pytest.raises(SettingsError, match="rat"):
        load_settings("produce", {"config": str(config)})


def test_the_command_exits_2_on_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["consume", "--dim", "-1"]) == 2
    assert "recstream consume: invalid settings" in capsys.readouterr().err
