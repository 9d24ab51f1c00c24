"""The embedded default: the demo's report, its JSON and the report plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

from consumers.cli import main
from consumers.demo import run_demo
from consumers.settings import DemoSettings


def test_the_demo_beats_popularity_and_writes_its_json(tmp_path: Path) -> None:
    out = io.StringIO()
    report_path = tmp_path / "demo.json"
    report = run_demo(DemoSettings(events=20_000, json_path=str(report_path)), out)
    assert report["events"] == 20_000
    assert report["model"]["hr@10"] > 1.5 * report["popularity"]["hr@10"]
    written = json.loads(report_path.read_text())
    assert set(written) >= {"model", "popularity", "events", "events_per_s"}
    assert set(written["model"]) >= {"hr@10", "ndcg@10"}
    assert "online (prequential) quality" in out.getvalue()
    assert all(items for items in report["top10"].values())


def test_report_draws_a_png(tmp_path: Path) -> None:
    plot = tmp_path / "report.png"
    assert main(["report", "--events", "6000", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
