"""`recstream` on the command line: parse flags into settings and call `run`.

Every setting comes from, in order of precedence: its flag, its `RECSTREAM_<NAME>`
environment variable, the command's table in a TOML file (`--config FILE` or
`RECSTREAM_CONFIG`; e.g. `[consume]`, `[produce]`), then its default. Settings
are validated before anything starts; a bad one is reported and exits 2.
Secrets never come from flags, which every local user can read (`ps`).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from consumers.model.factory import settings_beyond
from consumers.settings import ConsumeSettings, DemoSettings, RecommendSettings, ReportSettings
from streamer.settings import ProduceSettings

FLAG_NAMES = {"json_path": "--json", "plot_path": "--plot"}
COMMANDS: dict[str, tuple[type[BaseSettings], str]] = {
    "demo": (DemoSettings, "run producer, learner and store in one process (no services)"),
    "report": (ReportSettings, "the demo run, with a PNG of online HR@10 and throughput"),
    "consume": (ConsumeSettings, "learn from Kafka, publish to Redis, serve /metrics, /health"),
    "produce": (ProduceSettings, "publish a synthetic or MovieLens stream to Kafka"),
    "recommend": (RecommendSettings, "print a user's top-N from Redis (popular when unknown)"),
}


class SettingsError(ValueError):
    """The settings of a command are missing, unreadable or invalid."""


def _flag(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _is_secret(info: FieldInfo) -> bool:
    return info.annotation is SecretStr or SecretStr in get_args(info.annotation)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, dict) else str(value)


def _help(name: str, info: FieldInfo) -> str:
    """The field's description, its default (when it has one) and its variable."""
    default = info.get_default(call_default_factory=True)
    shown = "" if default is None else f"default {_shown(default)}, "
    return f"{info.description} ({shown}env RECSTREAM_{name.upper()})".replace("%", "%%")


def _add_flags(parser: argparse.ArgumentParser, settings: type[BaseSettings]) -> None:
    """One flag per settings field; unset flags fall back to env, file, default.

    A secret's flag is hidden, only there to be refused by `load_settings`.
    """
    parser.add_argument(
        "--config", help="TOML file whose [command] table holds settings (env RECSTREAM_CONFIG)"
    )
    for name, info in settings.model_fields.items():
        parser.add_argument(
            _flag(name),
            dest=name,
            default=None,
            help=argparse.SUPPRESS if _is_secret(info) else _help(name, info),
        )


def _epilog(command: str, settings: type[BaseSettings]) -> str:
    secrets = [
        f"{info.description}: RECSTREAM_{name.upper()}, or {name} in the file"
        for name, info in settings.model_fields.items()
        if _is_secret(info)
    ]
    said = "Each flag can also be set by its RECSTREAM_<NAME> variable or in the "
    said += f"[{command}] table of the --config file; a flag beats the variable, which "
    said += "beats the file."
    if "model_options" in settings.model_fields:
        said += " Each model's settings without a flag (--model-options), with their "
        said += f"defaults: {settings_beyond(settings.model_fields.keys())}."
    if secrets:
        said += " Secrets are not flags (every local user can read flags with ps): "
        said += "; ".join(secrets) + "."
    return said


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (settings, summary) in COMMANDS.items():
        sub = commands.add_parser(
            name, help=summary, description=summary, epilog=_epilog(name, settings)
        )
        if name == "recommend":
            sub.add_argument("user", help="the user id, as producers sent it")
            sub.add_argument("-n", type=int, default=10, help="items to print (default 10)")
        _add_flags(sub, settings)
    commands.add_parser(
        "evaluate",
        help="online learner vs batch peers on MovieLens-100K and synthetic streams",
        description="runs benchmarks/evaluate.py of a source checkout (its flags: "
        "recstream evaluate --help); needs the [bench] extra for the peers",
    )
    return parser


def load_settings(command: str, flags: dict[str, Any]) -> BaseSettings:
    """Flags over `RECSTREAM_*` variables over the TOML file's `[command]` table."""
    settings, _ = COMMANDS[command]
    path = flags.pop("config", None) or os.environ.get("RECSTREAM_CONFIG")
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as handle:
                table = tomllib.load(handle).get(command, {})
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SettingsError(f"cannot read config file {path}: {error}") from error
        if not isinstance(table, dict):
            raise SettingsError(f"{path}: [{command}] must be a table")
        values = {k: v for k, v in table.items() if f"RECSTREAM_{k.upper()}" not in os.environ}
    given = {name: value for name, value in flags.items() if value is not None}
    _refuse_secrets(settings, given)
    values.update(given)
    try:
        return settings(**values)
    except ValidationError as error:
        raise SettingsError("invalid settings\n" + _errors(settings, error)) from error


def _refuse_secrets(settings: type[BaseSettings], flags: dict[str, Any]) -> None:
    """Flags are readable by every local user (`ps`): none may carry a secret."""
    for name, value in flags.items():
        info = settings.model_fields.get(name)
        if info is not None and _is_secret(info):
            why = f"{_flag(name)} is not accepted"
        elif isinstance(value, str) and "://" in value and urlsplit(value).password:
            why = f"{_flag(name)} has a password in its URL"
        elif name.endswith("_options") and any("password" in key.lower() for key in _keys(value)):
            why = f"{_flag(name)} holds a password"
        else:
            continue
        secrets = [field for field, kind in settings.model_fields.items() if _is_secret(kind)]
        own = [field for field in secrets if field.split("_")[0] == name.split("_")[0]]
        where = " or ".join(f"RECSTREAM_{field.upper()}" for field in own or secrets)
        raise SettingsError(
            f"{why}: every local user can read flags (ps); set {where} or put it in the "
            "--config file"
        )


def _keys(value: Any) -> list[str]:
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return []
    return [str(key) for key in parsed] if isinstance(parsed, dict) else []


def _errors(settings: type[BaseSettings], error: ValidationError) -> str:
    """One line per error, with the value given unless it may be a secret (a secret
    field's, or an unknown name's: a misspelt secret)."""
    lines = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"]) or "settings"
        info = settings.model_fields.get(str(detail["loc"][0])) if detail["loc"] else None
        shown = info is not None and not _is_secret(info)
        given = f" (given {detail['input']!r})" if shown else ""
        lines.append(f"  {where}: {detail['msg']}{given}")
    return "\n".join(lines)


def _evaluate(args: list[str]) -> int:
    """Offline evaluation is a tool of the source checkout, not part of the package."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "evaluate.py"
    if not script.is_file():
        print(
            "recstream evaluate: runs benchmarks/evaluate.py from a source checkout of "
            "recstream; it is not installed with the package",
            file=sys.stderr,
        )
        return 2
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent.parent))
    runpy.run_path(str(script), run_name="__main__")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `recstream` command; a reader that stops early (`| head`) ends it quietly."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # Python's advice: point stdout at devnull, so its flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(argv: list[str]) -> int:
    if argv[:1] == ["evaluate"]:  # every flag after it is the evaluation script's
        return _evaluate(argv[1:])
    args = vars(_parser().parse_args(argv))
    command = args.pop("command")
    user, n = args.pop("user", None), args.pop("n", None)
    try:
        settings = load_settings(command, args)
    except SettingsError as error:
        print(f"recstream {command}: {error}", file=sys.stderr)
        return 2
    if isinstance(settings, DemoSettings):
        from consumers.demo import run_demo

        run_demo(settings, sys.stdout)
    elif isinstance(settings, ConsumeSettings):
        from consumers.consume import run_consume

        return run_consume(settings)
    elif isinstance(settings, ProduceSettings):
        from streamer.produce import run_produce

        run_produce(settings)
    elif isinstance(settings, RecommendSettings):
        from consumers.client import run_recommend

        return run_recommend(
            settings.redis,
            settings.prefix,
            str(user),
            int(n or 10),
            sys.stdout,
            options=settings.redis_options,
            password=settings.redis_password,
            allow_plaintext_secrets=settings.allow_plaintext_secrets,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
