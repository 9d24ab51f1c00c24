"""The embedded default: producer, log, learner and store in one process, no services."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, TextIO

from prometheus_client import CollectorRegistry
from tqdm import tqdm

from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.learner import OnlineLearner
from consumers.metrics import LearnerMetrics
from consumers.model.factory import make_model
from consumers.publisher import Publisher
from consumers.service import ConsumeService
from consumers.settings import DemoSettings
from consumers.sinks.memory import MemoryStore
from consumers.sinks.schema import decode_ranked
from streamer.datasets import open_dataset, open_features
from streamer.events import ITEMS_TOPIC, USERS_TOPIC, VIEWS_TOPIC

PRODUCE_CHUNK = 2000


def run_demo(settings: DemoSettings, out: TextIO) -> dict[str, Any]:
    """Stream the source through the learner; print progress and a report; return the report."""
    settings.pin_threads()
    log = MemoryEventLog()
    store = MemoryStore(settings.prefix)
    learner = OnlineLearner(
        make_model(settings.model, settings.hyper_parameters(), search=settings.search())
    )
    service = ConsumeService(
        MemoryEventSource(log, [VIEWS_TOPIC, USERS_TOPIC, ITEMS_TOPIC], "demo"),
        learner,
        Publisher(learner, store, **settings.publishing()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=settings.batch_size,
        max_wait_s=0.0,
        users_topic=USERS_TOPIC,
        items_topic=ITEMS_TOPIC,
    )
    topics = {"user": USERS_TOPIC, "item": ITEMS_TOPIC}
    for record in open_features(settings.source):  # as `produce` does: features first
        log.send_features(record, topics[record.kind])
    while service.step():
        pass
    events = itertools.islice(open_dataset(settings.source), settings.events)
    started = time.perf_counter()
    series: list[dict[str, float]] = []
    with tqdm(total=settings.events, unit="ev", file=out, mininterval=0.5) as bar:
        while chunk := list(itertools.islice(events, PRODUCE_CHUNK)):
            for event in chunk:
                log.send(event, VIEWS_TOPIC)
            while consumed := service.step():
                bar.update(consumed)
            series.append(_point(learner, time.perf_counter() - started, series))
            bar.set_postfix(
                loss=f"{service.smoothed_loss or 0:.3f}",
                hr10=f"{learner.quality.recent_hit_rate:.3f}",
                pop_hr10=f"{learner.popularity_quality.recent_hit_rate:.3f}",
                refresh=False,
            )
    elapsed = time.perf_counter() - started
    users = learner.model.users.raws(range(min(settings.users_shown, len(learner.model.users))))
    report = {
        "model": learner.quality.summary(),
        "popularity": learner.popularity_quality.summary(),
        "rating": learner.rating_quality.summary(),
        "events": learner.events,
        "events_per_s": round(learner.events / elapsed, 1),
        "users": len(learner.model.users),
        "items": len(learner.model.items),
        "top10": {str(user): _top10(store, user) for user in users},
        "series": series,
    }
    _print_report(report, learner.model.name, out)
    if settings.json_path:
        with open(settings.json_path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    if settings.plot_path:
        from consumers.report import plot_report

        plot_report(report, settings.source, settings.plot_path)
        print(f"  plot: {settings.plot_path}", file=out)
    return report


def _point(
    learner: OnlineLearner, seconds: float, series: list[dict[str, float]]
) -> dict[str, float]:
    """One sample of the run: windowed quality, and throughput since the last sample."""
    last = series[-1] if series else {"events": 0, "seconds": 0.0}
    return {
        "events": learner.events,
        "seconds": round(seconds, 3),
        "events_per_s": round(
            (learner.events - last["events"]) / max(seconds - last["seconds"], 1e-9), 1
        ),
        "hr@10": round(learner.quality.recent_hit_rate, 4),
        "popularity_hr@10": round(learner.popularity_quality.recent_hit_rate, 4),
    }


def _top10(store: MemoryStore, user: object) -> list[Any]:
    value = store.get(store.keys.user_top(user))  # type: ignore[arg-type]
    return [] if value is None else list(decode_ranked(value)["items"][:10])


def _print_report(report: dict[str, Any], model_name: str, out: TextIO) -> None:
    model, popular = report["model"], report["popularity"]
    lines = [
        "",
        f"recstream demo: {report['events']:,} events, {report['users']:,} users, "
        f"{report['items']:,} items, {report['events_per_s']:,.0f} events/s",
        f"online (prequential) quality on {model['scored']:,} events of known users:",
        f"  {model_name:<12} HR@10 {model['hr@10']:.4f}  NDCG@10 {model['ndcg@10']:.4f}",
        f"  {'popularity':<12} HR@10 {popular['hr@10']:.4f}  NDCG@10 {popular['ndcg@10']:.4f}",
    ]
    rating = report["rating"]
    if rating["rated"]:
        lines.append(
            f"  prequential rating error on {rating['rated']:,} rated events: "
            f"RMSE {rating['rmse']:.4f}  MAE {rating['mae']:.4f}"
        )
    for user, items in report["top10"].items():
        lines.append(f"  top-10 for {user}: {items}")
    print("\n".join(lines), file=out)
