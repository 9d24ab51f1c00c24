"""`recstream` on the command line: parse flags into settings and call `run`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from consumers.settings import ConsumeSettings, DemoSettings, RecommendSettings
from streamer.settings import ProduceSettings

FLAG_NAMES = {"json_path": "--json"}


def _add_flags(parser: argparse.ArgumentParser, settings: type[BaseSettings]) -> None:
    """One flag per settings field; unset flags fall back to RECSTREAM_* or the default."""
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
    for name, settings, summary in (
        ("demo", DemoSettings, "run producer, learner and store in one process (no services)"),
        ("consume", ConsumeSettings, "learn from Kafka, publish to Redis, serve /metrics"),
        ("produce", ProduceSettings, "publish a synthetic or MovieLens stream to Kafka"),
    ):
        _add_flags(commands.add_parser(name, help=summary, description=summary), settings)
    recommend = commands.add_parser(
        "recommend",
        help="print a user's top-N from Redis (popular items for unknown users)",
        description="print a user's top-N from Redis (popular items for unknown users)",
    )
    recommend.add_argument("user")
    recommend.add_argument("-n", type=int, default=10, help="list length (default 10)")
    _add_flags(recommend, RecommendSettings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    command = args.pop("command")
    if command == "recommend":
        from consumers.client import run_recommend

        user, n = args.pop("user"), args.pop("n")
        try:
            settings = RecommendSettings(**{k: v for k, v in args.items() if v is not None})
        except ValidationError as error:
            print(f"recstream recommend: invalid settings\n{error}", file=sys.stderr)
            return 2
        return run_recommend(settings.redis, settings.prefix, user, n, sys.stdout)
    given = {name: value for name, value in args.items() if value is not None}
    try:
        if command == "demo":
            from consumers.demo import run_demo

            run_demo(DemoSettings(**given), sys.stdout)
        elif command == "consume":
            from consumers.run import run_consume

            run_consume(ConsumeSettings(**given))
        else:
            from streamer.run import run_produce

            run_produce(ProduceSettings(**given))
    except ValidationError as error:
        print(f"recstream {command}: invalid settings\n{error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
