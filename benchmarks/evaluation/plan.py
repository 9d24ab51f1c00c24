"""Everything the evaluation run is parameterised by, with the full and quick presets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

PEERS = (
    "implicit-als",
    "implicit-bpr",
    "lightfm-warp",
    "lightfm-bpr",
    "lightfm-warp-features",
    "rechub-youtubednn",
    "rechub-gru4rec",
    "rechub-sasrec",
)
# peers that need side information, which only MovieLens-100K has
ML100K_ONLY = ("lightfm-warp-features",)


def _default_params() -> dict[str, dict[str, Any]]:
    """Peer hyper-parameters used when not tuning (and the base of every grid point)."""
    return {
        "implicit-als": {"regularization": 0.1, "alpha": 10.0, "iterations": 15},
        "implicit-bpr": {"learning_rate": 0.05, "regularization": 0.01, "iterations": 100},
        "lightfm-warp": {"learning_rate": 0.05, "epochs": 10, "chunk_epochs": 1},
        "lightfm-bpr": {"learning_rate": 0.05, "epochs": 10, "chunk_epochs": 1},
        "lightfm-warp-features": {"learning_rate": 0.05, "epochs": 10, "chunk_epochs": 1},
        # not tuned (no grid): each fit is minutes; torch-rechub's example settings
        "rechub-youtubednn": {"epochs": 5},
        "rechub-gru4rec": {"epochs": 5},
        # SASRec's paper's blocks (2) and dropout (0.2), raw dot products; learning rate
        # 0.002 over 0.001 and a temperature of 0.05 on the validation stretch (one seed)
        "rechub-sasrec": {"epochs": 5, "temperature": 1.0, "learning_rate": 0.002},
    }


def _service_batch_size() -> int:
    from consumers.settings import TrainingSettings

    return int(TrainingSettings.model_fields["batch_size"].default)


def _grids() -> dict[str, list[dict[str, Any]]]:
    """Each grid was widened where a full run chose its edge (ALS regularization and
    alpha, BPR learning rate and regularization, LightFM learning rates and epochs; last
    for ALS's alpha 30 and LightFM BPR's 0.01 on the drifting stream,
    LightFM-with-features' 0.05 on the temporal split). Choices still on an edge after
    the last run are named in the README's quality section."""
    return {
        "implicit-als": [
            {"regularization": reg, "alpha": alpha, "iterations": 15}
            for reg in (1.0, 10.0, 30.0, 100.0, 300.0)
            for alpha in (0.03, 0.1, 0.3, 1.0, 10.0, 30.0, 100.0)
        ],
        # iterations stay at 100: each retrain is the run's most expensive step
        "implicit-bpr": [
            {"learning_rate": lr, "regularization": reg, "iterations": 100}
            for lr in (0.0003, 0.001, 0.003, 0.01, 0.03)
            for reg in (0.003, 0.01, 0.03, 0.1, 0.3)
        ],
        "lightfm-warp": [{"learning_rate": lr} for lr in (0.001, 0.003, 0.01, 0.02, 0.05)],
        "lightfm-bpr": [{"learning_rate": lr} for lr in (0.003, 0.01, 0.05, 0.1, 0.2)],
        "lightfm-warp-features": [{"learning_rate": lr} for lr in (0.01, 0.02, 0.05, 0.1)],
    }


def _diagnostics() -> dict[str, dict[str, Any]]:
    """What-if variants of mf (one change each from the defaults: the hardest of 8
    uniform draws, 2 passes; other micro-batches are the `recstream-bN` rows), scored on
    the validation stretch only."""
    return {
        "defaults": {},
        "before: uniform negative, 1 pass": {"negatives": 1, "passes": 1},
        "1 draw (uniform negative)": {"negatives": 1},
        "hardest of 4 draws": {"negatives": 4},
        "hardest of 16 draws": {"negatives": 16},
        "1 pass": {"passes": 1},
        "3 passes": {"passes": 3},
        "learning_rate 0.05": {"learning_rate": 0.05},
        "SGD, learning_rate 0.05": {"optimizer": "sgd", "learning_rate": 0.05},
    }


@dataclass(frozen=True)
class Plan:
    """Protocol constants; `quick()` shrinks them to a smoke test of about a minute."""

    seeds: tuple[int, ...] = (0, 1, 2)
    test_fraction: float = 0.2
    # the tail of the training part, shaped like the test: its last 20% (a 10% tail
    # rewarded short-horizon settings that lost on the temporal test)
    validation_fraction: float = 0.2
    chunk: int = 1000
    # every model of ours, and every peer in `at_cadence`, steps every `micro_batch`
    # events: the service's default
    micro_batch: int = field(default_factory=lambda: _service_batch_size())
    # mf also at this micro-batch, an extra row labelled `recstream-bN` (None: skip)
    mf_micro_batch: int | None = 64
    k: int = 10
    factors: int = 64
    window: int = 1000  # scored events per point of the HR-over-stream curves
    recovery_window: int = 500
    drift_events: int = 30_000
    drift_at: float = 0.5
    drift_test_fraction: float = 2 / 3
    drift_validation_fraction: float = 0.2  # of the drift stream's training part
    bootstrap: int = 2000
    tune: bool = True
    peers: tuple[str, ...] = PEERS
    default_params: dict[str, dict[str, Any]] = field(default_factory=_default_params)
    grids: dict[str, list[dict[str, Any]]] = field(default_factory=_grids)
    # widened where a run's choices sat on the edge (200 epochs, 100 per step; then 500
    # and 300); 1 is the floor of both
    lightfm_epochs: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    lightfm_chunk_epochs: tuple[int, ...] = (1, 3, 10, 30, 100, 300, 1000)
    # peers that take the learner's micro-batch as their step (LightFM's fit_partial,
    # implicit ALS's partial fits); the others retrain once per chunk
    at_cadence: tuple[str, ...] = (
        "implicit-als",
        "lightfm-warp",
        "lightfm-bpr",
        "lightfm-warp-features",
        "rechub-youtubednn",
        "rechub-gru4rec",
        "rechub-sasrec",
    )
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=_diagnostics)
    models: tuple[str, ...] = ("mf",)  # our `--model` values evaluated (mf labelled `recstream`)
    # ours too slow for the synthetic streams in the run's budget: MovieLens-100K only (none
    # today: the slowest, content and sequence, learn ~2,400 events/s at micro-batch 512)
    ml100k_only_models: tuple[str, ...] = ()
    # (predictor, update every): River per event (its own protocol, the reference) and at
    # the service's micro-batch, ours at it and at a small one
    rating_predictors: tuple[tuple[str, int], ...] = (
        ("river-baseline", 1),
        ("river-biasedmf", 1),
        ("river-fm", 1),
        ("river-baseline", 512),
        ("river-biasedmf", 512),
        ("river-fm", 512),
        ("recstream-rating", 512),
        ("recstream-rating", 64),
    )

    @classmethod
    def quick(cls) -> Plan:
        defaults = _default_params()
        defaults["implicit-bpr"]["iterations"] = 30
        for name in ("lightfm-warp", "lightfm-bpr"):
            defaults[name]["epochs"] = 5
        return cls(
            seeds=(0,),
            test_fraction=0.05,
            drift_events=9_000,
            window=300,
            recovery_window=200,
            bootstrap=500,
            tune=False,
            default_params=defaults,
            diagnostics={},
            mf_micro_batch=None,
            # minutes each at full size: covered by their unit tests instead
            peers=tuple(peer for peer in PEERS if not peer.startswith("rechub-")),
            rating_predictors=(("river-biasedmf", 512), ("recstream-rating", 512)),
        )

    def with_models(self, models: tuple[str, ...]) -> Plan:
        return replace(self, models=models)

    def with_seeds(self, seeds: int) -> Plan:
        return replace(self, seeds=tuple(range(seeds)))
