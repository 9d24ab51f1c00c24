"""The evaluation run's plan (which systems at which cadence) and the README's claims,
which must be true of the table next to them."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.evaluation.jobs import EvalJob, StreamSpec, SystemSpec, load_stream, run_eval_job
from benchmarks.evaluation.plan import Plan
from benchmarks.evaluation.readme import events_per_second, quality_section, verdict
from benchmarks.evaluation.suite import ML100K, _eval_jobs, best_of_ours
from benchmarks.evaluation.summary import paired_table
from benchmarks.evaluation.temporal import temporal_truth

SYNTHETIC = StreamSpec("synthetic-drift", 1000)


def _labels_and_steps(plan: Plan, stream: StreamSpec) -> dict[str, int]:
    jobs = _eval_jobs(plan, {"lightfm-warp": {"step": plan.micro_batch}}, stream, 100, True)
    return {job.system.label: job.system.params["step"] for job in jobs}


def test_every_model_at_the_service_micro_batch_and_mf_also_at_64() -> None:
    plan = Plan(seeds=(0,)).with_models(("mf", "history", "sequence"))
    assert plan.micro_batch == 512  # the service's default batch size
    steps = _labels_and_steps(plan, ML100K)
    assert steps == {
        "lightfm-warp": 512,
        "popularity": plan.chunk,
        "popularity-online": 512,
        "recstream": 512,
        "recstream-history": 512,
        "recstream-sequence": 512,
        "recstream-b64": 64,
    }


def test_a_model_too_slow_for_the_synthetic_streams_runs_on_movielens_only() -> None:
    plan = Plan(seeds=(0,), ml100k_only_models=("sequence",)).with_models(("mf", "sequence"))
    assert "recstream-sequence" in _labels_and_steps(plan, ML100K)
    assert "recstream-sequence" not in _labels_and_steps(plan, SYNTHETIC)


def test_only_ours_score_the_validation_stretch_on_the_way() -> None:
    plan = Plan(seeds=(0,))
    jobs = _eval_jobs(plan, {"lightfm-warp": {}}, ML100K, 100, True, None, 80)
    starts = {job.system.label: job.validation_start for job in jobs}
    assert starts["recstream"] == starts["recstream-b64"] == 80
    assert starts["lightfm-warp"] is None and starts["popularity"] is None


def _hr(mean: float, step: int = 512) -> dict[str, Any]:
    return {"step": step, "common_hr@10": {"mean": mean}}


def test_the_best_of_ours_is_chosen_at_the_runs_micro_batch() -> None:
    validation = {
        "recstream": _hr(0.06),
        "recstream-sequence": _hr(0.08),
        "recstream-b64": _hr(0.09, step=64),  # not at equal cadence
    }
    assert best_of_ours(validation, 512) == "recstream-sequence"
    assert best_of_ours({}, 512) is None


def _diff(low: float, high: float, p: float) -> dict[str, Any]:
    return {
        "seed_mean": {"mean_diff": (low + high) / 2, "ci_low": low, "ci_high": high},
        "max_sign_p": p,
    }


def test_verdict_needs_the_interval_and_every_seeds_sign_test() -> None:
    assert verdict(_diff(0.01, 0.03, 0.001)) == "better"
    assert verdict(_diff(-0.03, -0.01, 0.001)) == "worse"
    assert verdict(_diff(-0.01, 0.03, 0.001)) == "no significant difference"
    assert verdict(_diff(0.01, 0.03, 0.2)) == "no significant difference"
    assert verdict(None) == "no significant difference"


def _entry(hr: float, step: int, seconds_per_event: float) -> dict[str, Any]:
    return {
        "step": step,
        "common_hr@10": {"mean": hr},
        "common_ndcg@10": {"mean": hr / 2},
        "cost": {"seconds_per_event": seconds_per_event},
        "slices": {},
    }


def _report(paired: dict[str, Any]) -> dict[str, Any]:
    prequential = {
        "recstream": _entry(0.070, 512, 1e-4),
        "recstream-b64": _entry(0.090, 64, 2e-4),
        "recstream-sequence": _entry(0.100, 512, 4e-3),
        "lightfm-warp": _entry(0.065, 512, 1e-3),
        "popularity": _entry(0.060, 1000, 1e-6),
    }
    temporal = {name: {"ndcg@10": {"mean": 0.15}, "hr@10": {"mean": 0.4}} for name in prequential}
    return {
        "plan": {
            "seeds": [0, 1, 2],
            "micro_batch": 512,
            "models": ["mf", "sequence"],
            "ml100k_only_models": ["sequence"],
        },
        "machine": {"cores": 2},
        "seconds": 2400,
        "best_ours": "recstream-sequence",
        "prequential": prequential,
        "temporal": temporal,
        "paired": paired,
        "drift": {"table": {}},
        "steady": {"prequential": {"recstream": _entry(0.3, 512, 1e-4)}, "paired": {}},
    }


def test_the_readme_table_has_every_system_and_its_learning_speed() -> None:
    section = quality_section(_report({}))
    for name in ("recstream", "recstream-b64", "recstream-sequence", "lightfm-warp"):
        assert f"| {name} |" in section
    assert "| recstream-sequence | 512 | 0.1000 | 0.0500 |" in section
    assert "| 250 |" in section  # 1 / 4e-3 events per second
    assert events_per_second({"seconds_per_event": 0.5}) == 2.0
    assert events_per_second({"seconds_per_event": 1.0, "process_seconds_per_event": 0.25}) == 4
    assert "On MovieLens-100K only (too slow for the synthetic streams" in section


def _prequential_claim(report: dict[str, Any]) -> str:
    section = quality_section(report).split("\n")
    return next(line for line in section if line.startswith("- Prequential HR@10"))


def test_the_readme_claims_beating_every_rival_only_when_each_is_significant() -> None:
    better, undecided = _diff(0.01, 0.03, 0.001), _diff(-0.01, 0.03, 0.001)
    rivals = ("recstream", "lightfm-warp", "popularity")
    everything = {name: {"prequential_hr@10": better} for name in rivals}
    claim = _prequential_claim(_report(everything))
    assert claim.startswith("- Prequential HR@10 (MovieLens-100K): best recstream-sequence")
    assert "best peer lightfm-warp 0.0650" in claim
    assert "recstream-sequence beats every one of them significantly" in claim
    assert "recstream-b64" not in claim  # not at equal cadence: not a rival here

    one_open = {**everything, "recstream": {"prequential_hr@10": undecided}}
    claim = _prequential_claim(_report(one_open))
    assert "beats every one" not in claim
    assert "significantly better than lightfm-warp, popularity" in claim
    assert "no significant difference from recstream" in claim


def test_the_best_of_ours_on_the_temporal_split_is_chosen_apart() -> None:
    validation = {
        "recstream": {**_hr(0.08), "temporal": {"ndcg@10": {"mean": 0.15}}},
        "recstream-history": {**_hr(0.06), "temporal": {"ndcg@10": {"mean": 0.20}}},
        "recstream-b64": {**_hr(0.09, step=64), "temporal": {"ndcg@10": {"mean": 0.30}}},
        "recstream-sequence": _hr(0.07),  # not scored on the temporal split
    }
    assert best_of_ours(validation, 512) == "recstream"
    assert best_of_ours(validation, 512, ("temporal", "ndcg@10")) == "recstream-history"


def test_the_temporal_claim_names_the_best_of_ours_on_the_temporal_split() -> None:
    report = _report({})
    report["best_ours_temporal"] = "recstream"
    report["temporal"]["recstream"] = {"ndcg@10": {"mean": 0.2}, "hr@10": {"mean": 0.5}}
    section = quality_section(report).split("\n")
    claim = next(line for line in section if line.startswith("- Temporal NDCG@10"))
    assert "; recstream (ours, chosen on the validation stretch) 0.2000" in claim
    assert "recstream-sequence by prequential HR@10, recstream by temporal NDCG@10" in (
        quality_section(report)
    )


def test_a_job_recommends_once_at_the_validation_start_and_pairs_per_protocol() -> None:
    stream = StreamSpec("synthetic-drift", 3000)
    jobs = {
        label: run_eval_job(
            EvalJob(
                stream,
                SystemSpec(kind, {"step": 250}, name=label),
                2400,
                250,
                10,
                8,
                True,
                validation_start=1800,
            )
        )
        for label, kind in (("a", "popularity-online"), ("b", "popularity"), ("c", "popularity"))
    }
    truth = temporal_truth(load_stream(stream), 1800, 2400)
    validation_temporal = jobs["a"].validation_temporal
    assert validation_temporal is not None
    assert np.array_equal(validation_temporal.users, truth.users)
    grouped = {label: [result] for label, result in jobs.items()}
    table = paired_table(grouped, load_stream(stream), np.random.default_rng(0), 10, "a", "b")
    assert "prequential_hr@10" not in table.get("a", {}) and "temporal_ndcg@10" in table["a"]
    assert "prequential_hr@10" in table["b"] and "temporal_ndcg@10" not in table["b"]
    assert {"prequential_hr@10", "temporal_ndcg@10"} <= set(table["c"])
