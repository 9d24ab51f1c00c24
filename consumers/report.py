"""A picture for people: online HR@10 (model vs popularity) and throughput over a run."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_report(report: dict[str, Any], title: str, path: str) -> None:
    """Two panels over events learned: windowed HR@10 of both rankers, and events/s."""
    series = report["series"]
    events = [point["events"] for point in series]
    figure, (quality, speed) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    quality.plot(events, [p["hr@10"] for p in series], label="online learner (mf-bpr)")
    quality.plot(events, [p["popularity_hr@10"] for p in series], label="popularity")
    quality.set_ylabel("HR@10, last 5,000 events")
    quality.set_title(
        f"recstream on {title}: prequential quality and throughput "
        f"({report['events']:,} events, {report['events_per_s']:,.0f} events/s overall)"
    )
    quality.legend()
    quality.grid(alpha=0.3)
    speed.plot(events, [p["events_per_s"] for p in series], color="tab:green")
    speed.set_ylabel("events/s (learn + publish)")
    speed.set_xlabel("events learned")
    speed.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
