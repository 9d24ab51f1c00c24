"""Settings from flags, environment and a TOML file, validated with clear errors; a
--help that explains every flag; secrets never on the command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.cli import COMMANDS, SettingsError, _parser, load_settings, main
from consumers.model.featured import FeaturesConfig
from consumers.model.tower import HistoryConfig
from consumers.settings import ConsumeSettings, DemoSettings


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


def test_unset_model_flags_take_the_models_own_defaults() -> None:
    settings = load_settings("consume", {"model": "history"})
    assert isinstance(settings, ConsumeSettings)
    assert settings.hyper_parameters() == HistoryConfig()
    flagged = load_settings("consume", {"model": "history", "history_length": "50"})
    assert isinstance(flagged, ConsumeSettings)
    history = flagged.hyper_parameters()
    assert isinstance(history, HistoryConfig) and history.history_length == 50


def test_a_model_setting_without_a_flag_comes_from_model_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = {"model": "history", "model_options": '{"frequency_half_life": 5000}'}
    settings = load_settings("consume", flags)
    assert isinstance(settings, ConsumeSettings)
    history = settings.hyper_parameters()
    assert isinstance(history, HistoryConfig) and history.frequency_half_life == 5000
    config = tmp_path / "recstream.toml"
    config.write_text("[demo]\nmodel = 'features'\n[demo.model_options]\ncold_share = 0.5\n")
    demo = load_settings("demo", {"config": str(config)})
    assert isinstance(demo, DemoSettings)
    features = demo.hyper_parameters()
    assert isinstance(features, FeaturesConfig) and features.cold_share == 0.5
    with pytest.raises(SystemExit):
        main(["consume", "--help"])
    assert "cold_share 0.25" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{"cold_sharee": 0.5}', "the features model has no setting cold_sharee"),
        ('{"learning_rate": 0.1}', "learning_rate has a flag of its own"),
        ('{"cold_share": 2}', "cold_share must be in"),
        ('{"cold_share": "half"}', "cold_share: Input should be a valid number"),
        ("cold_share=0.5", "model_options"),
    ],
)
def test_model_options_the_model_cannot_take_are_refused(options: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings("consume", {"model": "features", "model_options": options})


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"dim": "0"}, "dim"),
        ({"batch_size": "many"}, "batch_size"),
        ({"loss": "hinge"}, "loss"),
        ({"model": "als"}, "model"),
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


def test_every_flag_of_every_command_says_what_it_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for settings, _ in COMMANDS.values():
        assert all(info.description for info in settings.model_fields.values()), settings
    subparsers = next(
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    for name, command in subparsers.choices.items():
        for action in command._actions:
            if action.help != argparse.SUPPRESS:  # a secret's flag, only there to be refused
                assert (action.help or "").split("(")[0].strip(), (name, action.dest)
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "--" in text and "PydanticUndefined" not in text, name
        assert "-password" not in text, "a secret shown as a flag"


def test_checkpoints_go_to_a_state_directory_per_group_and_prefix(
    state_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def directory(**flags: str) -> str | None:
        settings = load_settings("consume", dict(flags))
        assert isinstance(settings, ConsumeSettings)
        return settings.checkpoint_dir

    assert directory() == f"{state_home}/recstream/recstream-learner@rs%3A"
    assert directory(group="g/2", prefix="rs:b:") == f"{state_home}/recstream/g%2F2@rs%3Ab%3A"
    assert directory(state_dir="/srv/state") == "/srv/state/recstream-learner@rs%3A"
    monkeypatch.setenv("RECSTREAM_STATE_DIR", "/var/lib/recstream")
    assert directory() == "/var/lib/recstream/recstream-learner@rs%3A"
    assert directory(checkpoint_dir="/data/model") == "/data/model"
    assert directory(checkpoint_dir="none") is None
    monkeypatch.delenv("RECSTREAM_STATE_DIR")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/home/ann")
    assert directory() == "/home/ann/.local/state/recstream/recstream-learner@rs%3A"
    with pytest.raises(SettingsError, match="checkpoint_dir"):
        directory(checkpoint_dir="")


@pytest.mark.parametrize(
    "argv",
    [
        ["consume", "--kafka-password", "s3cret"],
        ["consume", "--redis-password=s3cret"],
        ["produce", "--kafka-pass", "s3cret"],
        ["recommend", "u1", "--redis-password", "s3cret"],
        ["consume", "--redis", "rediss://learner:s3cret@redis:6380/0"],
        ["consume", "--kafka-options", '{"sasl_plain_password": "s3cret"}'],
    ],
)
def test_a_secret_on_the_command_line_is_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "RECSTREAM_" in error and "PASSWORD" in error and "(ps)" in error
    assert "s3cret" not in error


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    config = tmp_path / "recstream.toml"
    for table in ('kafka_password = ["s3cret"]', 'redis_pasword = "s3cret"'):
        config.write_text(f"[consume]\n{table}\n")
        with pytest.raises(SettingsError) as error:
            load_settings("consume", {"config": str(config)})
        assert "password" in str(error.value) or "pasword" in str(error.value)
        assert "s3cret" not in str(error.value)


def test_a_password_among_client_options_never_shows_in_a_repr(tmp_path: Path) -> None:
    config = tmp_path / "recstream.toml"
    config.write_text(
        '[consume]\ncheckpoint_dir = "none"\n'
        '[consume.kafka_options]\nssl_password = "s3cret"\nsecurity_protocol = "SSL"\n'
        '[consume.redis_options]\nssl_password = "s3cret"\n'
    )
    settings = load_settings("consume", {"config": str(config)})
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert settings.kafka_options["ssl_password"] == "s3cret"  # still given to the client
    assert "SSL" in repr(settings)


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    """`recstream demo | head -1`: no BrokenPipeError traceback, exit 0."""
    command = f"{sys.executable} -m consumers.cli demo --events 3000 | head -c 1 >/dev/null"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
