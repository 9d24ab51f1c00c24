"""The README's quality section, written from one evaluation report.

Every sentence is computed from the table it stands next to (best system and best peer
per column, paired differences, drift recovery), so a re-run cannot leave a claim behind.
`update_readme` replaces the text between the two markers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.evaluation.jobs import OURS

BEGIN = "<!-- evaluation:begin (benchmarks/evaluate.py --readme writes this part) -->"
END = "<!-- evaluation:end -->"


def _best(values: dict[str, float], higher: bool = True) -> tuple[str, float]:
    name = (max if higher else min)(values, key=lambda key: values[key])
    return name, values[name]


def _is_ours(name: str) -> bool:
    return name.startswith(OURS)


def _claim(what: str, values: dict[str, float], paired: dict[str, Any], key: str) -> str:
    """'best overall; best peer; ours minus the best peer with its CI and p'."""
    if not values:
        return ""
    best, value = _best(values)
    peers = {name: v for name, v in values.items() if not _is_ours(name)}
    text = f"{what}: best {best} {value:.4f}"
    if peers:
        peer, peer_value = _best(peers)
        text += f"; best peer {peer} {peer_value:.4f}"
        diff = paired.get(peer, {}).get(key)
        if diff and OURS in values:
            mean = diff["seed_mean"]
            text += (
                f"; {OURS} minus {peer} {mean['mean_diff']:+.4f} "
                f"[{mean['ci_low']:+.4f}, {mean['ci_high']:+.4f}], "
                f"sign-test p<={diff['max_sign_p']:.2g}"
            )
    return text + "."


def _cell(entry: dict[str, Any] | None, *path: str) -> str:
    for key in path:
        if entry is None:
            return "n/a"
        entry = entry.get(key)
    return f"{entry:.4f}" if isinstance(entry, float) else "n/a"


def quality_section(report: dict[str, Any]) -> str:
    preq, temporal, paired = report["prequential"], report["temporal"], report["paired"]
    chunk = report["plan"]["chunk"]
    rows = []
    for name in sorted(preq, key=lambda n: (not _is_ours(n), n)):
        entry = preq[name]
        cost = entry["cost"]
        per_event = cost.get("process_seconds_per_event", cost["seconds_per_event"])
        slices = entry.get("slices", {})
        rows.append(
            "| "
            + " | ".join(
                [
                    name,
                    str(entry["step"]),
                    _cell(entry, "common_hr@10", "mean"),
                    _cell(entry, "common_ndcg@10", "mean"),
                    _cell(temporal.get(name), "ndcg@10", "mean"),
                    _cell(temporal.get(name), "recall@10", "mean"),
                    _cell(slices.get("cold items"), "common", "hr@10", "mean"),
                    _cell(slices.get("cold users"), "own", "hr@10", "mean"),
                    f"{per_event * chunk:.3f}",
                ]
            )
            + " |"
        )
    hr = {name: entry["common_hr@10"]["mean"] for name, entry in preq.items()}
    ndcg = {name: entry["ndcg@10"]["mean"] for name, entry in temporal.items()}
    drift = report["drift"]["table"]
    recovered = {
        name: entry.get("events_to_0.9")
        for name, entry in drift.items()
        if entry.get("events_to_0.9")
    }
    steady = {n: e["common_hr@10"]["mean"] for n, e in report["steady"]["prequential"].items()}
    lines = [
        BEGIN,
        f"From one run of `benchmarks/evaluate.py` (seeds {report['plan']['seeds']}, "
        f"{report.get('seconds', 0) / 60:.0f} min on {report['machine']['cores']} shared "
        "cores); everything here is in `benchmarks/results/evaluation.md`. "
        f"`recstream` learns every micro-batch of {report['plan']['micro_batch']}; "
        "`recstream-bN` at micro-batch N (512: the service's default).",
        "",
        "- " + _claim("Prequential HR@10 (MovieLens-100K)", hr, paired, "prequential_hr@10"),
        "- " + _claim("Temporal NDCG@10 (MovieLens-100K)", ndcg, paired, "temporal_ndcg@10"),
        "- After the taste drift, 90% of the pre-drift HR@10 is regained by "
        + (
            ", ".join(f"{name} in {events:,} events" for name, events in recovered.items())
            or "no system"
        )
        + "; never by "
        + (", ".join(sorted(set(drift) - set(recovered))) or "none")
        + ".",
        "- "
        + _claim(
            "Synthetic stream without drift, HR@10",
            steady,
            report["steady"]["paired"],
            "prequential_hr@10",
        ),
    ]
    ratings = report.get("ratings") or []
    if ratings:
        lines.append(
            "- Prequential RMSE on MovieLens-100K's ratings: "
            + ", ".join(f"{r['system']} {r['rmse']:.4f}" for r in ratings)
            + " (River's own benchmark: 0.954 Baseline, 0.948 BiasedMF)."
        )
    lines += [
        "",
        "| system (MovieLens-100K) | update every | prequential HR@10 | NDCG@10 | temporal "
        "NDCG@10 | Recall@10 | cold items HR@10 | cold users HR@10 (own set) | "
        f"s per {chunk:,} events |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        END,
    ]
    return "\n".join(lines)


def update_readme(path: Path, section: str) -> None:
    """Replace the text between the markers (both must be there, in order)."""
    text = path.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    path.write_text(text[:start] + section + text[stop:])
