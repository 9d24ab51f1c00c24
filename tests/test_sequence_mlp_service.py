"""The sequence and mlp models on real services: Kafka -> learner process (--model X) ->
Redis, stopped and restarted from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from consumers.durability.host import latest_checkpoint
from consumers.settings import default_checkpoint_dir
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from tests.conftest import RedisTarget
from tests.learners import Learner
from tests.test_end_to_end import consume_args, learn_until, learners, produce

__all__ = ["learners"]  # the fixture, shared with the end-to-end tests


@pytest.mark.parametrize("model", ["sequence", "mlp"])
def test_a_model_learns_from_kafka_into_redis_and_resumes_from_its_checkpoint(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    state_home: str, tmp_path: Path, model: str,
) -> None:  # fmt: skip
    events = list(synthetic_views(SyntheticConfig(n_users=60, n_items=400, events=1000, seed=6)))
    args = consume_args(kafka_bootstrap, kafka_topic, redis_db, "--model", model)
    client, prefix = redis_db.client, redis_db.prefix

    def run_until(in_model: int, name: str) -> None:
        learn_until(learners, Learner(args, tmp_path / f"{name}.log"), redis_db, in_model)

    produce(kafka_bootstrap, kafka_topic, events[:600])
    run_until(600, "first")
    produce(kafka_bootstrap, kafka_topic, events[600:])
    run_until(1000, "restarted")

    watched: dict[str, set[str]] = {}
    for event in events:
        watched.setdefault(str(event.user), set()).add(str(event.item))
    stages = {"mlp": ["retrieve:mf", "rank:mlp"]}.get(model)
    for user, seen in watched.items():
        top = json.loads(client.get(f"{prefix}user:{user}:top") or b"null")
        assert top["model"] == model and top["items"] and top.get("stages") == stages
        assert not seen & set(top["items"])
        assert top["scores"] == sorted(top["scores"], reverse=True)
        vector = np.frombuffer(client.get(f"{prefix}user:{user}:vec") or b"", dtype="<f4")
        assert vector.shape == (32,) and np.isfinite(vector).all() and vector.any()
    checkpoint = latest_checkpoint(default_checkpoint_dir(None, f"learners-{kafka_topic}", prefix))
    assert checkpoint is not None and checkpoint.manifest.events == 1000
    if model == "sequence":  # every user's GRU state came through the restart
        tensors = {**checkpoint.shared, **checkpoint.workers[0]}
        assert int((tensors["sequence_last"] >= 0).sum()) == len(watched)
