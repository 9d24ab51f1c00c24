"""Item search: exact against brute force; the HNSW graph's recall, updates and exclusions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from consumers.model.ann import ExactIndex, HnswIndex, LiveSearch, exact_top_k
from consumers.model.config import ModelConfig, SearchConfig
from consumers.model.mf import MatrixFactorization


def _data(rows: int, queries: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((rows, dim)).astype(np.float32),
        rng.standard_normal((queries, dim)).astype(np.float32),
    )


def _brute(
    items: np.ndarray, queries: np.ndarray, k: int, exclude: list[set[int]]
) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ items.T
    for i, seen in enumerate(exclude):
        scores[i, list(seen)] = -np.inf
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def _hnsw(dim: int = 16, **options: object) -> HnswIndex:
    pytest.importorskip("hnswlib")
    return HnswIndex(dim, ef_search=100, **options)  # type: ignore[arg-type]


def test_exact_index_matches_brute_force_with_exclusions() -> None:
    items, queries = _data(500, 20)
    exclude = [set(range(i, i + 5 * i, 3)) for i in range(20)]
    index = ExactIndex(16, capacity=8)  # grows
    index.update(np.arange(500), items)
    scores, rows = index.search(queries, 10, exclude)
    want_scores, want_rows = _brute(items, queries, 10, exclude)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    assert len(index) == 500


def test_exact_index_never_returns_rows_it_does_not_hold() -> None:
    items, queries = _data(10, 3)
    index = ExactIndex(16)
    index.update(np.array([1, 4, 7]), items[[1, 4, 7]])
    scores, rows = index.search(queries, 5)
    assert set(rows[:, :3].ravel()) <= {1, 4, 7}
    assert (rows[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_exact_top_k_in_chunks_equals_one_matmul(monkeypatch: pytest.MonkeyPatch) -> None:
    items, queries = _data(300, 40)
    whole = exact_top_k(torch.from_numpy(queries), torch.from_numpy(items), 7)
    monkeypatch.setattr("consumers.model.topn.CHUNK_SCORES", 900)  # 3 queries per chunk
    monkeypatch.setattr("consumers.model.topn.MIN_CHUNK_USERS", 1)
    chunked = exact_top_k(torch.from_numpy(queries), torch.from_numpy(items), 7)
    torch.testing.assert_close(whole, chunked)


def test_hnsw_recall_at_10_on_random_data() -> None:
    items, queries = _data(5000, 200)
    index = _hnsw()
    index.update(np.arange(5000), items)
    _, rows = index.search(queries, 10)
    _, truth = _brute(items, queries, 10, [set()] * 200)
    assert _recall(rows, truth) >= 0.9


def test_hnsw_replaced_vectors_are_found_where_they_moved() -> None:
    items, queries = _data(2000, 50)
    index = _hnsw()
    index.update(np.arange(2000), items)
    moved = np.arange(0, 2000, 4)
    items[moved] = np.random.default_rng(5).standard_normal((moved.size, 16)).astype(np.float32)
    index.update(moved, items[moved])
    assert len(index) == 2000  # replaced, not added
    _, rows = index.search(queries, 10)
    _, truth = _brute(items, queries, 10, [set()] * 50)
    assert _recall(rows, truth) >= 0.9
    # A row moved onto a query is that query's best.
    items[7] = queries[0] * 10
    index.update(np.array([7]), items[7:8])
    assert index.search(queries[:1], 1)[1][0, 0] == 7


def test_hnsw_honours_exclusions_and_over_fetches() -> None:
    items, queries = _data(3000, 30)
    index = _hnsw()
    index.update(np.arange(3000), items)
    _, truth = _brute(items, queries, 40, [set()] * 30)
    exclude = [set(truth[i, :30].tolist()) for i in range(30)]  # their 30 best
    _, rows = index.search(queries, 10, exclude)
    for i in range(30):
        assert not set(rows[i].tolist()) & exclude[i]
        assert (rows[i] >= 0).all()
    _, want = _brute(items, queries, 10, exclude)
    assert _recall(rows, want) >= 0.9


def test_live_search_rescores_with_current_vectors_and_refreshes() -> None:
    items, queries = _data(2000, 20)
    table = torch.from_numpy(items.copy())
    live = LiveSearch(_hnsw(), refresh_every=2, sweep_rows=0)
    q = torch.from_numpy(queries)
    scores, rows = live.search(q, table, 10)
    _, want_rows = _brute(items, queries, 10, [set()] * 20)
    assert _recall(rows.numpy(), want_rows) >= 0.9
    # Scores always come from the table as it is now, even before a refresh.
    table[rows[0, 0]] *= 2
    scores, rows = live.search(q, table, 10)  # second search: refresh due
    top = int(rows[0, 0])
    assert float(scores[0, 0]) == pytest.approx(float(q[0] @ table[top]), rel=1e-5)
    # A moved row enters the candidate set once marked and refreshed.
    table[11] = q[3] * 10
    live.mark_moved([11])
    live.search(q, table, 10)
    _, rows = live.search(q, table, 10)  # the fourth search refreshes
    assert int(rows[3, 0]) == 11
    # New rows are searchable at once.
    grown = torch.cat((table, q[5:6] * 20))
    _, rows = live.search(q, grown, 10)
    assert int(rows[5, 0]) == 2000


def test_live_search_falls_back_to_exact_when_exclusions_swamp_the_graph() -> None:
    items, queries = _data(300, 2)
    table = torch.from_numpy(items)
    index = _hnsw(max_fetch=16)
    live = LiveSearch(index)
    exclude = [set(range(0, 300, 2)), set()]  # half the catalogue
    _, rows = live.search(torch.from_numpy(queries), table, 10, exclude)
    _, want = _brute(items, queries, 10, exclude)
    np.testing.assert_array_equal(rows.numpy()[0], want[0])


def test_model_uses_the_graph_past_the_threshold_and_exact_below() -> None:
    pytest.importorskip("hnswlib")
    search = SearchConfig(index="ann", ann_min_items=50, refresh_every=1)
    model = MatrixFactorization(ModelConfig(dim=8, seed=1), search=search)
    model.users.add_many(range(5))
    model.items.add_many(range(40))
    model.sync_rows()
    model.history.add(np.zeros(3, dtype=np.int64), np.array([1, 2, 3]))
    users = np.arange(5)
    exact = model.recommend(users, 5)
    assert not model.search.live  # below the threshold
    model.items.add_many(range(40, 400))
    model.sync_rows()
    scores, rows = model.recommend(users, 5)
    assert "recommend" in model.search.live
    assert not set(rows[0].tolist()) & {1, 2, 3}
    exact_model = MatrixFactorization(ModelConfig(dim=8, seed=1))
    exact_model.load_state(model.state())
    want_scores, _ = exact_model.recommend(users, 5)
    np.testing.assert_allclose(scores, want_scores, rtol=1.3e-6, atol=1e-5)
    _, similar = model.similar(np.arange(4), 5)
    _, want_similar = exact_model.similar(np.arange(4), 5)
    assert (similar == want_similar).mean() >= 0.9
    assert exact[1].shape == (5, 5)
