"""The evaluation protocols: metrics, splits, the same-events filter, paired statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from benchmarks.evaluation.drift import recovery, trailing_mean
from benchmarks.evaluation.prequential import common_events, run_prequential
from benchmarks.evaluation.ranking import (
    catalog_coverage,
    expected_hit_ndcg,
    hit_at_k,
    ndcg_at_k,
    rank_counts,
    recall_at_k,
    top_k,
)
from benchmarks.evaluation.rating import progressive_errors
from benchmarks.evaluation.slices import cold_slices, earlier_events
from benchmarks.evaluation.splits import (
    by_time,
    chunk_bounds,
    chunk_start,
    split_point,
    steps_within,
)
from benchmarks.evaluation.stats import mean_se, paired_comparison, sign_test_p
from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.popularity import PopularityPeer
from benchmarks.evaluation.temporal import evaluate_temporal, temporal_truth
from streamer.events import EntityFeatures, ViewEvent


def stream_of(pairs: list[tuple[str, str]]) -> EncodedStream:
    return EncodedStream.encode([ViewEvent(u, i, float(t)) for t, (u, i) in enumerate(pairs)])


# A small stream; chunks of 2 from position 2: [2,4) [4,6) [6,7).
PAIRS = [
    ("a", "x"),  # 0
    ("b", "y"),  # 1
    ("a", "y"),  # 2 common: a and y seen before 2
    ("c", "x"),  # 3 new user
    ("c", "y"),  # 4 common: c first seen at 3 < chunk start 4
    ("a", "z"),  # 5 new item
    ("a", "y"),  # 6 re-watch
]


# metrics ---------------------------------------------------------------------------


def test_expected_hit_ndcg_ranks_and_ties() -> None:
    assert expected_hit_ndcg(0, 0, 10) == (1.0, 1.0)
    hit, gain = expected_hit_ndcg(3, 0, 10)
    assert hit == 1.0 and gain == pytest.approx(1 / math.log2(5))
    assert expected_hit_ndcg(10, 0, 10) == (0.0, 0.0)
    hit, gain = expected_hit_ndcg(9, 1, 10)  # position 9 or 10, equally likely
    assert hit == 0.5 and gain == pytest.approx(0.5 / math.log2(11))
    hit, _ = expected_hit_ndcg(0, 99, 10)  # a constant scorer over 100 items: chance
    assert hit == pytest.approx(0.1)


def test_rank_counts_leave_out_excluded_and_count_ties() -> None:
    scores = np.array([0.9, 0.5, 0.7, 0.5, np.nan])
    assert rank_counts(scores, 1, np.array([], dtype=np.int64)) == (2, 1)
    assert rank_counts(scores, 1, np.array([0, 0, 3, 99])) == (1, 0)


def test_ndcg_normalises_by_the_ideal_over_min_truth_and_k() -> None:
    assert ndcg_at_k([1, 2], {1, 2}, 10) == pytest.approx(1.0)
    assert ndcg_at_k([9, 1], {1}, 10) == pytest.approx(1 / math.log2(3))
    many = set(range(20))
    assert ndcg_at_k(list(range(10)), many, 10) == pytest.approx(1.0)
    dcg = 1 / math.log2(4) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k([7, 8, 1, 2], {1, 2, 3}, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k([1], set(), 10) == 0.0


def test_recall_hit_and_coverage() -> None:
    assert recall_at_k([1, 5, 2, 6], {1, 2, 3, 4}, 10) == 0.5
    assert recall_at_k([1, 2, 3], {1, 2, 3}, 2) == pytest.approx(2 / 3)
    assert hit_at_k([5, 6, 1], {1}, 3) == 1.0 and hit_at_k([5, 6, 1], {1}, 2) == 0.0
    assert catalog_coverage([[0, 1], [1, 2]], 10, 10) == pytest.approx(0.3)
    assert catalog_coverage([[0, 1, 2, 3]], 4, 2) == pytest.approx(0.5)


def test_top_k_excludes_and_breaks_ties_by_index() -> None:
    scores = np.array([1.0, 3.0, 3.0, 2.0, np.nan])
    assert top_k(scores, 3, np.array([1])) == [2, 3, 0]
    assert top_k(scores, 10, np.array([0, 1, 2, 3])) == [4]


# splits and stream -------------------------------------------------------------------


def test_time_order_keeps_ties_in_arrival_order() -> None:
    events = [ViewEvent("u", i, ts) for i, ts in (("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 1.0))]
    assert [event.item for event in by_time(events)] == ["b", "d", "c", "a"]


def test_split_point_and_chunks() -> None:
    assert split_point(100_000, 0.8) == 80_000
    assert split_point(80_000, 0.9) == 72_000
    assert split_point(10, 0.75) == 7
    assert chunk_bounds(80, 100, 8) == [(80, 88), (88, 96), (96, 100)]
    assert steps_within([(0, 10), (10, 15)], 4) == [(0, 4), (4, 8), (8, 10), (10, 14), (14, 15)]
    assert chunk_start(97, 80, 8) == 96 and chunk_start(80, 80, 8) == 80
    with pytest.raises(ValueError):
        chunk_bounds(0, 10, 0)


def test_stream_numbers_by_first_appearance() -> None:
    stream = stream_of(PAIRS)
    assert stream.user_ids == ["a", "b", "c"] and stream.item_ids == ["x", "y", "z"]
    assert [stream.users_before(p) for p in range(8)] == [0, 1, 2, 2, 3, 3, 3, 3]
    assert [stream.items_before(p) for p in range(8)] == [0, 1, 2, 2, 2, 2, 3, 3]
    assert stream.history(5).tolist() == [0, 1]
    assert stream.user_items_before(0, 3).tolist() == [0, 1]
    assert stream.rewatch.tolist() == [False] * 6 + [True]


# the same-events filter and the prequential loop ---------------------------------------


def test_common_events_need_user_and_item_seen_before_the_chunk() -> None:
    stream = stream_of(PAIRS)
    assert common_events(stream, 2, 2).tolist() == [True, False, True, False, False]
    # one chunk over the whole tail: c (first at 3) is not known before 2
    assert common_events(stream, 2, 5).tolist() == [True, False, False, False, False]


class LowIndexFirst:
    """Scores items by lower index first (higher with `sign=1`); records what it learned."""

    name = "low-index"

    def __init__(self, step: int, sign: float = -1.0) -> None:
        self.step = step
        self.sign = sign
        self.calls: list[tuple[int, int]] = []

    def fit(self, stream: EncodedStream, stop: int) -> None:
        self.calls.append((0, stop))

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        self.calls.append((start, stop))

    def scores(self, users: np.ndarray, n_items: int) -> np.ndarray:
        return np.tile(self.sign * np.arange(n_items, dtype=float), (len(users), 1))


def test_prequential_scores_before_learning_and_never_crosses_a_chunk() -> None:
    stream = stream_of(PAIRS)
    system = LowIndexFirst(step=3)
    trace = run_prequential(stream, system, start=2, chunk=2, k=1)
    assert system.calls == [(0, 2), (2, 4), (4, 6), (6, 7)]
    # event 2: a watched x, so y is the best left: a hit at k=1
    assert trace.common_hit[0] == 1.0 and trace.own_hit[0] == 1.0
    # event 4: c watched x; y is first among the rest
    assert trace.common_hit[2] == 1.0
    # event 5: item z is new since the step began: a miss for the own set, not common
    assert trace.own_new_item[3] and trace.own_hit[3] == 0.0 and np.isnan(trace.common_hit[3])
    counts = trace.counts()
    assert counts["common_scored"] == 2 and counts["own_scored"] == 3
    assert counts["own_skipped"] == 2  # the new user at 3 and the re-watch at 6


def test_common_set_ranks_among_items_known_before_the_chunk() -> None:
    # item c appears inside the chunk: an online system (step 1) knows it when event 3
    # comes, but the common set ranks among the items known at the chunk start only
    stream = stream_of([("u", "a"), ("v", "b"), ("v", "c"), ("u", "b")])
    trace = run_prequential(stream, LowIndexFirst(step=1, sign=1.0), start=2, chunk=2, k=1)
    assert trace.common_hit[1] == 1.0  # b among {b} (a watched, c too new)
    assert trace.own_hit[1] == 0.0  # b among {b, c}: c scores higher


def test_a_frozen_run_must_be_one_chunk() -> None:
    stream = stream_of(PAIRS)
    with pytest.raises(ValueError):
        run_prequential(stream, LowIndexFirst(2), 2, chunk=2, learn=False)
    trace = run_prequential(stream, LowIndexFirst(5), 2, chunk=5, learn=False, fit=False)
    assert trace.update_seconds == []


def test_popularity_peer_in_the_loop() -> None:
    pairs = [("a", "x"), ("b", "x"), ("c", "y"), ("a", "y"), ("c", "x"), ("b", "w")]
    trace = run_prequential(stream_of(pairs), PopularityPeer(step=2), start=3, chunk=2, k=1)
    # x is the most viewed; a and c watched one of x, y each, so the other is on top
    assert trace.common_hit[:2].tolist() == [1.0, 1.0]
    assert trace.own_new_item[2]  # w is new


def test_temporal_truth_and_metrics() -> None:
    pairs = [("a", "x"), ("a", "y"), ("b", "y"), ("b", "z"), ("a", "z"), ("a", "w"), ("b", "x")]
    stream = stream_of(pairs)
    truth = temporal_truth(stream, 4)
    assert truth.users.tolist() == [0, 1]
    assert truth.truth == [{2}, {0}]  # w is not in the training catalogue
    assert truth.dropped_new_items == 1
    result = evaluate_temporal(LowIndexFirst(1), truth, k=1)
    assert result.recall.tolist() == [1.0, 1.0]  # a: z is all that is left; b: x first
    assert result.coverage == pytest.approx(2 / 3)


def test_temporal_truth_stops_at_the_validation_end() -> None:
    pairs = [("a", "x"), ("a", "y"), ("b", "y"), ("b", "z"), ("a", "z"), ("b", "x"), ("a", "x")]
    truth = temporal_truth(stream_of(pairs), 4, stop=5)
    assert truth.users.tolist() == [0]  # b's x at 5 lies past the stretch
    assert truth.truth == [{2}]


def test_cold_slices() -> None:
    stream = stream_of(PAIRS)
    assert earlier_events(stream.items).tolist() == [0, 0, 1, 1, 2, 0, 3]
    slices = cold_slices(stream, start=2, threshold=2)
    assert slices["cold items"].tolist() == [True, True, False, True, False]
    assert slices["cold users"].tolist() == [True, True, True, False, False]


def test_side_feature_rows_share_tokens_and_sum_to_one() -> None:
    pytest.importorskip("scipy")
    from benchmarks.evaluation.side_features import feature_matrix

    tokens = [["genre=Drama", "year=1990"], ["genre=Drama"]]
    matrix = feature_matrix(["1", "2"], tokens).toarray()
    assert matrix.shape == (2, 4)  # two ids, Drama, the 1990s
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert matrix[0, 2] > 0 and matrix[1, 2] > 0 and matrix[1, 3] == 0


def test_lightfm_gets_the_tokens_our_feature_models_embed() -> None:
    pytest.importorskip("scipy")
    from benchmarks.evaluation.side_features import stream_feature_matrices

    records = [
        EntityFeatures("item", "x", {"genre": ["Drama"], "year": 1995}, "Title"),
        EntityFeatures("user", "a", {"age": 24, "gender": "f", "geo": "9"}),
    ]
    stream = EncodedStream.encode([ViewEvent("a", "x", 0.0), ViewEvent("b", "y", 1.0)], records)
    users, items = stream_feature_matrices(stream)
    assert users.shape == (2, 2 + 3)  # a, b; age=20, gender=f, geo=9 (b has no record)
    assert items.shape == (2, 2 + 2)  # x, y; genre=Drama, year=1990
    assert users.toarray()[0].tolist() == [0.25, 0, 0.25, 0.25, 0.25]
    assert users.toarray()[1].tolist() == [0, 1, 0, 0, 0]


class MeanRating:
    """Predicts the mean of the ratings learned so far (3 before any)."""

    name = "mean"

    def __init__(self, step: int) -> None:
        self.step = step
        self.ratings: list[float] = []

    def predict(self, events: Sequence[ViewEvent]) -> NDArray[np.float64]:
        return np.full(len(events), np.mean(self.ratings) if self.ratings else 3.0)

    def learn(self, events: Sequence[ViewEvent]) -> None:
        self.ratings += [event.rating for event in events if event.rating is not None]


def test_progressive_errors_predict_before_learning() -> None:
    ratings = [5.0, 1.0, None, 3.0]
    events = [ViewEvent("u", str(i), float(i), 1.0, r) for i, r in enumerate(ratings)]
    result = progressive_errors(events, MeanRating(step=1))
    # predictions 3, 5, (skipped), 3 against 5, 1, 3
    assert result.events == 3
    assert result.mae == pytest.approx((2 + 4 + 0) / 3)
    assert result.rmse == pytest.approx(math.sqrt((4 + 16 + 0) / 3))
    assert progressive_errors(events, MeanRating(step=4)).mae == pytest.approx(4 / 3)


def test_progressive_errors_score_the_test_part_apart_after_learning_all_before_it() -> None:
    ratings = [5.0, 1.0, None, 3.0, 4.0]
    events = [ViewEvent("u", str(i), float(i), 1.0, r) for i, r in enumerate(ratings)]
    result = progressive_errors(events, MeanRating(step=2), test_start=3)
    # steps [5, 1] (3, 3), [None, 3] (3: the mean of 5 and 1), [4] (3)
    assert (result.events, result.test_events) == (4, 2)
    assert result.test_mae == pytest.approx((0 + 1) / 2)
    assert math.isnan(progressive_errors(events, MeanRating(step=2)).test_rmse)


def test_river_at_a_cadence_predicts_a_step_before_learning_its_events() -> None:
    pytest.importorskip("river")
    from benchmarks.evaluation.systems.river_rating import RiverRatingSystem

    events = [ViewEvent("u", "i", float(i), 1.0, 5.0) for i in range(20)]
    per_event = progressive_errors(events, RiverRatingSystem("river-baseline"))
    one_step = progressive_errors(events, RiverRatingSystem("river-baseline", step=20))
    assert one_step.system == "river-baseline@20"
    assert one_step.mae == pytest.approx(4.0)  # all predicted by the empty model (0 -> 1)
    assert per_event.mae < 1.0


def test_our_rating_model_is_predicted_before_each_micro_batch_is_learned() -> None:
    from benchmarks.evaluation.rating import OUR_RATING_MODEL, build_rating_system

    events = [ViewEvent(f"u{i % 3}", f"i{i % 4}", float(i), 1.0, 1.0 + i % 5) for i in range(40)]
    whole = progressive_errors(events, build_rating_system(OUR_RATING_MODEL, 0, step=40))
    assert whole.system == "recstream-rating@40"
    assert whole.mae == pytest.approx(2.0)  # nothing known: every prediction clipped to 1
    assert progressive_errors(events, build_rating_system(OUR_RATING_MODEL, 0, 4)).mae < 2.0


# statistics and drift ------------------------------------------------------------------


def test_paired_comparison_on_a_handmade_case() -> None:
    ours = np.array([1.0, 0.0, 1.0, 1.0])
    peer = np.array([0.0, 0.0, 1.0, 0.0])
    result = paired_comparison(ours, peer)
    assert result.mean_diff == pytest.approx(0.5)
    assert result.se == pytest.approx(math.sqrt(1 / 3) / 2)
    assert (result.wins, result.losses, result.ties) == (2, 0, 2)
    assert result.sign_p == pytest.approx(0.5)
    assert 0.0 <= result.ci_low <= 0.5 <= result.ci_high <= 1.0


def test_bootstrap_resamples_whole_groups() -> None:
    diffs = np.array([1.0, 1.0, 1.0, -1.0])
    same = paired_comparison(diffs, np.zeros(4), groups=np.array([0, 0, 0, 0]))
    assert same.ci_low == same.ci_high == pytest.approx(0.5)
    assert same.clusters == 1


def test_sign_test_and_mean_se() -> None:
    assert sign_test_p(0, 10) == pytest.approx(2 / 1024)
    assert sign_test_p(5, 5) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(60, 40) == pytest.approx(0.0569, abs=1e-3)
    assert mean_se(np.array([1.0, 3.0])) == (2.0, 1.0)


def test_trailing_mean_and_recovery() -> None:
    assert trailing_mean(np.array([1.0, 0.0, 1.0, 1.0]), 2).tolist() == [1.0, 0.5, 0.5, 1.0]
    positions = np.arange(100, 140)
    hits = np.r_[np.ones(10), np.zeros(10), np.ones(20)]  # drift at 110, back from 120
    found = recovery(positions, hits, drift=110, window=4, thresholds=(0.5, 1.0))
    assert found["pre_drift_hr"] == 1.0 and found["dip_hr"] == 0.0
    assert found["events_to_0.5"] == 12  # window 118..121 has two hits
    assert found["events_to_1"] == 14
    never = recovery(positions, np.r_[np.ones(10), np.zeros(30)], 110, 4)
    assert never["events_to_1"] is None


# adapters over real libraries (skipped when the bench extra is not installed) ----------


def test_online_learner_adapter_scores_known_rows() -> None:
    from benchmarks.evaluation.systems.online import OnlineLearnerSystem
    from consumers.model.config import ModelConfig

    stream = stream_of(PAIRS)
    system = OnlineLearnerSystem(ModelConfig(dim=4), step=2)
    trace = run_prequential(stream, system, start=2, chunk=2, k=3)
    assert trace.counts()["common_scored"] == 2
    assert system.scores(np.array([0, 2]), 3).shape == (2, 3)
    assert sum(system.cost.events) == len(stream)


@pytest.mark.parametrize(
    "kind",
    [
        "implicit-als",
        "implicit-bpr",
        "lightfm-warp",
        "lightfm-warp-features",
        "rechub-youtubednn",
        "rechub-gru4rec",
        "rechub-sasrec",
    ],
)
def test_peer_adapters(kind: str) -> None:
    library = {"rechub": "torch_rechub"}.get(kind.split("-")[0], kind.split("-")[0])
    pytest.importorskip(library)
    from benchmarks.evaluation.jobs import SystemSpec, build_system

    params = {
        "implicit-als": {"iterations": 2},
        "implicit-bpr": {"iterations": 2},
        "lightfm-warp": {"epochs": 1, "chunk_epochs": 1},
        "lightfm-warp-features": {"epochs": 1, "chunk_epochs": 1},
        "rechub-youtubednn": {"epochs": 1, "batch": 2, "step": 2, "history": 3},
        "rechub-gru4rec": {"epochs": 1, "batch": 2, "step": 2, "history": 3},
        "rechub-sasrec": {"epochs": 1, "batch": 2, "step": 2, "history": 3},
    }[kind]
    system = build_system(SystemSpec(kind, params), chunk=2, factors=4)
    trace = run_prequential(stream_of(PAIRS), system, start=2, chunk=2, k=3)
    assert trace.counts()["common_scored"] == 2


def test_histories_are_padded_where_each_tower_reads_them() -> None:
    from benchmarks.evaluation.systems.rechub_towers import padded

    histories = [np.array([2, 3, 4]), np.array([], dtype=np.int64)]
    assert padded(histories, 2).tolist() == [[4, 5], [0, 0]]
    assert padded([np.array([3])], 3).tolist() == [[0, 0, 4]]  # the last view last
    assert padded([np.array([3])], 3, left=False).tolist() == [[4, 0, 0]]  # SASRec's


def test_implicit_als_partial_fits_between_retrains() -> None:
    pytest.importorskip("implicit")
    from benchmarks.evaluation.jobs import SystemSpec, build_system

    spec = SystemSpec("implicit-als", {"iterations": 2, "step": 1})
    system = build_system(spec, chunk=4, factors=4)
    stream = stream_of(PAIRS)
    system.fit(stream, 2)
    before = system.scores(np.array([0]), 2).copy()
    system.update(stream, 2, 3)  # a watches y: a partial fit of a and y
    assert not np.allclose(system.scores(np.array([0]), 2), before)
    trace = run_prequential(stream, system, start=2, chunk=4, k=3)
    assert len(trace.update_events) == len(stream) - 2  # one update per event


def test_river_rating_models_learn() -> None:
    pytest.importorskip("river")
    from benchmarks.evaluation.systems.river_rating import RIVER_MODELS, RiverRatingSystem

    events = [ViewEvent(str(i % 3), str(i % 4), float(i), 1.0, 1.0 + i % 5) for i in range(40)]
    for kind in RIVER_MODELS:
        result = progressive_errors(events, RiverRatingSystem(kind))
        assert result.events == 40 and 0.0 < result.mae < 4.0


def test_readme_holds_the_generated_quality_section(tmp_path: Path) -> None:
    from benchmarks.evaluation.readme import BEGIN, END, update_readme

    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    assert text.index(BEGIN) < text.index(END)
    copy = tmp_path / "README.md"
    copy.write_text(f"before\n{BEGIN}\nold\n{END}\nafter\n")
    update_readme(copy, f"{BEGIN}\nnew\n{END}")
    assert copy.read_text() == f"before\n{BEGIN}\nnew\n{END}\nafter\n"
