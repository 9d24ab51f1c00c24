"""`recstream` on the command line: parse flags into settings and call `run`.

Every setting comes from, in order of precedence: its flag, its `RECSTREAM_<NAME>`
environment variable, the command's table in a TOML file (`--config FILE` or
`RECSTREAM_CONFIG`; e.g. `[consume]`, `[produce]`), then its default. Settings
are validated before anything starts; a bad one is reported and exits 2.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

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


def _add_flags(parser: argparse.ArgumentParser, settings: type[BaseSettings]) -> None:
    """One flag per settings field; unset flags fall back to env, file, default."""
    parser.add_argument("--config", help="TOML file (env RECSTREAM_CONFIG)")
    for name, info in settings.model_fields.items():
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            help=f"default {info.default!r}; env RECSTREAM_{name.upper()}",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (settings, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if name == "recommend":
            sub.add_argument("user")
            sub.add_argument("-n", type=int, default=10, help="list length (default 10)")
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
    values.update({name: value for name, value in flags.items() if value is not None})
    try:
        return settings(**values)
    except ValidationError as error:
        raise SettingsError(f"invalid settings\n{error}") from error


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
    argv = list(sys.argv[1:] if argv is None else argv)
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
        from consumers.run import run_consume

        return run_consume(settings)
    elif isinstance(settings, ProduceSettings):
        from streamer.run import run_produce

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
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
