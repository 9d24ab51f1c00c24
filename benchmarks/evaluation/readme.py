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


SIGNIFICANT_P = 0.05


def _best(values: dict[str, float], higher: bool = True) -> tuple[str, float]:
    name = (max if higher else min)(values, key=lambda key: values[key])
    return name, values[name]


def _is_ours(name: str) -> bool:
    return name.startswith(OURS)


def verdict(diff: dict[str, Any] | None) -> str:
    """'better' or 'worse' where the 95% CI excludes 0 and every seed's sign test has
    p < 0.05; otherwise 'no significant difference' (also when not compared)."""
    if not diff:
        return "no significant difference"
    mean = diff["seed_mean"]
    if diff["max_sign_p"] < SIGNIFICANT_P:
        if mean["ci_low"] > 0:
            return "better"
        if mean["ci_high"] < 0:
            return "worse"
    return "no significant difference"


def _against(best: str, others: list[str], paired: dict[str, Any], key: str) -> str:
    """How `best` fares against each of `others`, grouped by verdict."""
    groups: dict[str, list[str]] = {}
    for name in others:
        groups.setdefault(verdict(paired.get(name, {}).get(key)), []).append(name)
    if groups.keys() == {"better"}:
        return f"{best} beats every one of them significantly"
    parts = []
    for word in ("better", "no significant difference", "worse"):
        if word in groups:
            names = ", ".join(groups[word])
            parts.append(
                {
                    "better": f"significantly better than {names}",
                    "worse": f"significantly worse than {names}",
                }.get(word, f"no significant difference from {names}")
            )
    return f"{best}: " + "; ".join(parts)


def _claim(
    what: str, values: dict[str, float], paired: dict[str, Any], key: str, best_ours: str
) -> str:
    """Best overall, best peer, and `best_ours` (chosen on the validation stretch)
    against mf and every peer: difference to the best peer with its CI and p."""
    if not values:
        return ""
    best, value = _best(values)
    text = f"{what}: best {best} {value:.4f}"
    peers = {name: v for name, v in values.items() if not _is_ours(name)}
    if not peers:
        return text + "."
    peer, peer_value = _best(peers)
    text += f"; best peer {peer} {peer_value:.4f}"
    if best_ours not in values:
        return text + "."
    text += f"; {best_ours} (ours, chosen on the validation stretch) {values[best_ours]:.4f}"
    diff = paired.get(peer, {}).get(key)
    if diff:
        mean = diff["seed_mean"]
        text += (
            f", minus {peer} {mean['mean_diff']:+.4f} "
            f"[{mean['ci_low']:+.4f}, {mean['ci_high']:+.4f}], "
            f"sign-test p<={diff['max_sign_p']:.2g}"
        )
    others = [name for name in values if name == OURS or not _is_ours(name)]
    others = [name for name in others if name != best_ours]
    return text + ". Against mf and each peer: " + _against(best_ours, others, paired, key) + "."


def _cell(entry: dict[str, Any] | None, *path: str) -> str:
    for key in path:
        if entry is None:
            return "n/a"
        entry = entry.get(key)
    return f"{entry:.4f}" if isinstance(entry, float) else "n/a"


def events_per_second(cost: dict[str, Any]) -> float:
    """Events learned per second of learning during the test part: ours learn and
    publish per micro-batch, a peer's update calls (retrains included)."""
    per_event = cost.get("process_seconds_per_event", cost["seconds_per_event"])
    return 1.0 / per_event if per_event > 0 else float("inf")


def _row(name: str, entry: dict[str, Any], temporal: dict[str, Any] | None) -> str:
    slices = entry.get("slices", {})
    cells = [
        name,
        str(entry["step"]),
        _cell(entry, "common_hr@10", "mean"),
        _cell(entry, "common_ndcg@10", "mean"),
        _cell(temporal, "hr@10", "mean"),
        _cell(temporal, "ndcg@10", "mean"),
        _cell(slices.get("cold items"), "common", "hr@10", "mean"),
        _cell(slices.get("cold users"), "own", "hr@10", "mean"),
        f"{events_per_second(entry['cost']):,.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def quality_section(report: dict[str, Any]) -> str:
    preq, temporal, paired = report["prequential"], report["temporal"], report["paired"]
    plan = report["plan"]
    best_ours = report.get("best_ours", OURS)
    best_temporal = report.get("best_ours_temporal", best_ours)
    rows = [
        _row(name, preq[name], temporal.get(name))
        for name in sorted(preq, key=lambda n: (not _is_ours(n), n))
    ]
    hr = {name: entry["common_hr@10"]["mean"] for name, entry in preq.items()}
    ndcg = {name: entry["ndcg@10"]["mean"] for name, entry in temporal.items()}
    drift = report["drift"]["table"]
    recovered = {
        name: entry.get("events_to_0.9")
        for name, entry in drift.items()
        if entry.get("events_to_0.9")
    }
    steady = {n: e["common_hr@10"]["mean"] for n, e in report["steady"]["prequential"].items()}
    only_ml = [m for m in plan.get("ml100k_only_models", ()) if m in plan.get("models", ())]
    lines = [
        BEGIN,
        f"From one run of `benchmarks/evaluate.py` (seeds {plan['seeds']}, "
        f"{report.get('seconds', 0) / 60:.0f} min on {report['machine']['cores']} shared "
        "cores); everything here is in `benchmarks/results/evaluation.md`. "
        f"Every model of ours learns every micro-batch of {plan['micro_batch']} (the "
        "service's default), and so does every peer that can step that often (`update "
        "every`); `recstream` is mf, `recstream-<model>` the others, `recstream-bN` mf at "
        "micro-batch N. The best of ours is chosen per protocol on the validation "
        f"stretch (before the test part): {best_ours} by prequential HR@10, "
        f"{best_temporal} by temporal NDCG@10."
        + (
            f" On MovieLens-100K only (too slow for the synthetic streams in the run's "
            f"budget): {', '.join(only_ml)}."
            if only_ml
            else ""
        ),
        "",
        "- "
        + _claim("Prequential HR@10 (MovieLens-100K)", hr, paired, "prequential_hr@10", best_ours),
        "- "
        + _claim(
            "Temporal NDCG@10 (MovieLens-100K)", ndcg, paired, "temporal_ndcg@10", best_temporal
        ),
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
            report["steady"].get("ours", OURS),
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
        "| system (MovieLens-100K) | update every | prequential HR@10 | prequential NDCG@10 "
        "| temporal HR@10 | temporal NDCG@10 | cold items HR@10 | cold users HR@10 (own set) "
        "| events/s (learning) |",
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
