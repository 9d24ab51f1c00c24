"""GRU4Rec-style or SASRec-style? The measurement that chose the `sequence` model.

    PYTHONPATH=. python benchmarks/sequence_choice.py [--quick]

Three encoders of a user's views, each learned online in one pass over ML-100K in time
order (micro-batches of `--step`), scored on the validation stretch only (the tail of
the training part, as the evaluation tunes its peers): prequential HR@10/NDCG@10 over
the validation events, and temporal NDCG@10 of a split at the validation's start.

- attention: causal self-attention over the last K views (consumers/model/sequence.py)
- gru-window: a GRU run over the last K views
- gru-state: GRU4Rec's kept state (what `--model sequence` ships; benchmarks/model_grid.py
  measures the shipped model the same way): one hidden vector per user, advanced by each view,
  trained one step back (truncated back-propagation)

Writes benchmarks/results/sequence_choice.json.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Literal  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from benchmarks.common import machine, pin_threads  # noqa: E402
from benchmarks.evaluation.data import movielens_100k  # noqa: E402
from benchmarks.evaluation.plan import Plan  # noqa: E402
from benchmarks.evaluation.prequential import run_prequential  # noqa: E402
from benchmarks.evaluation.splits import split_point  # noqa: E402
from benchmarks.evaluation.stream import EncodedStream  # noqa: E402
from benchmarks.evaluation.temporal import evaluate_temporal, temporal_truth  # noqa: E402

EncoderName = Literal["attention", "gru"]
PAD = -1


@dataclass(frozen=True, slots=True)
class SequenceConfig:
    """The prototypes' hyper-parameters (the shipped model's are consumers/model/sequence.py's)."""

    dim: int = 64
    window: int = 50
    encoder: EncoderName = "attention"
    heads: int = 2
    layers: int = 1
    negatives: int = 2048
    learning_rate: float = 0.002
    init_std: float = 0.05
    top_n: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.window < 1 or self.heads < 1 or self.layers < 1:
            raise ValueError("dim, window, heads and layers must be >= 1")
        if self.dim % self.heads:
            raise ValueError("dim must be a multiple of heads")
        if self.negatives < 1 or self.learning_rate <= 0 or self.top_n < 1:
            raise ValueError("negatives and top_n must be >= 1, learning_rate > 0")


class Windows:
    """Each user row's last `size` item rows, oldest first, `PAD` where fewer."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows = np.full((0, size), PAD, dtype=np.int64)

    def grow_to(self, users: int) -> None:
        if users > self.rows.shape[0]:
            capacity = max(users, int(self.rows.shape[0] * 1.5), 1024)
            grown = np.full((capacity, self.size), PAD, dtype=np.int64)
            grown[: self.rows.shape[0]] = self.rows
            self.rows = grown

    def advance(self, users: NDArray[np.int64], items: NDArray[np.int64]) -> NDArray[np.int64]:
        """Append each view in order; the window each view saw before it: [views, size]."""
        before = np.empty((users.size, self.size), dtype=np.int64)
        rows = self.rows
        for j, (user, item) in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
            before[j] = rows[user]
            rows[user, :-1] = rows[user, 1:]
            rows[user, -1] = item
        return before

    def of(self, users: NDArray[np.int64]) -> NDArray[np.int64]:
        return self.rows[users]

    def clear(self, user: int) -> None:
        self.rows[user] = PAD


class AttentionEncoder(nn.Module):
    """SASRec-style: causal self-attention over the window plus learned positions; the
    user vector is the output at the newest position."""

    def __init__(self, config: SequenceConfig) -> None:
        super().__init__()
        self.positions = nn.Parameter(torch.randn(config.window, config.dim) * config.init_std)
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            dim_feedforward=config.dim * 2,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        self.causal = nn.Transformer.generate_square_subsequent_mask(config.window)

    def forward(self, embedded: Tensor, padding: Tensor) -> Tensor:
        """`embedded` [users, window, dim] (zeros at padding) -> [users, dim]."""
        hidden = embedded + self.positions
        # a fully padded window attends to its newest slot only (its output is then unused)
        padding = padding.clone()
        padding[:, -1] = False
        out = self.layers(hidden, mask=self.causal, src_key_padding_mask=padding, is_causal=True)
        return self.norm(out[:, -1])


class GruEncoder(nn.Module):
    """GRU4Rec-style: a GRU run over the window, its last hidden state the user vector."""

    def __init__(self, config: SequenceConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(config.dim, config.dim, batch_first=True)

    def forward(self, embedded: Tensor, padding: Tensor) -> Tensor:
        """Padding sits on the left and embeds to zeros, so the GRU starts from them."""
        out, _ = self.gru(embedded)
        last: Tensor = out[:, -1]
        return last


def make_encoder(config: SequenceConfig) -> nn.Module:
    return AttentionEncoder(config) if config.encoder == "attention" else GruEncoder(config)


def encode(encoder: nn.Module, item_weight: Tensor, windows: NDArray[np.int64]) -> Tensor:
    """User vectors [users, dim] from windows of item rows [users, window]."""
    rows = torch.from_numpy(windows)
    padding = rows < 0
    embedded = nn.functional.embedding(rows.clamp(min=0), item_weight)
    embedded = embedded * (~padding).unsqueeze(-1)
    vectors: Tensor = encoder(embedded, padding)
    return vectors


def sampled_softmax_loss(
    queries: Tensor, positives: Tensor, negatives: Tensor, item_weight: Tensor
) -> Tensor:
    """Mean cross-entropy of each positive against shared uniform negatives (a negative
    equal to the positive is masked out)."""
    positive_scores = (queries * item_weight[positives]).sum(dim=1, keepdim=True)
    negative_scores = queries @ item_weight[negatives].T
    negative_scores = negative_scores.masked_fill(
        negatives.unsqueeze(0) == positives.unsqueeze(1), float("-inf")
    )
    logits = torch.cat([positive_scores, negative_scores], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros(len(positives), dtype=torch.long))


RESULTS = Path(__file__).resolve().parent / "results"


class SequenceSystem:
    """One encoder over the stream's dense rows, learned per step of events."""

    def __init__(self, variant: str, config: SequenceConfig, step: int) -> None:
        self.name = variant
        self.variant = variant
        self.config = config
        self.step = step

    def _reset(self, stream: EncodedStream) -> None:
        config = self.config
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.item_weight = nn.Parameter(torch.randn(stream.n_items, config.dim) * config.init_std)
        if self.variant == "gru-state":
            self.cell: nn.Module = nn.GRUCell(config.dim, config.dim)
            self.hidden = torch.zeros(stream.n_users, config.dim)
            self.last = np.full(stream.n_users, -1, dtype=np.int64)
            modules: list[nn.Module] = [self.cell]
        else:
            encoder: EncoderName = "attention" if self.variant == "attention" else "gru"
            self.encoder = make_encoder(dataclasses.replace(config, encoder=encoder))
            self.windows = Windows(config.window)
            self.windows.grow_to(stream.n_users)
            modules = [self.encoder]
        parameters = [self.item_weight, *[p for m in modules for p in m.parameters()]]
        self.optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
        self.known_items = 0

    def fit(self, stream: EncodedStream, stop: int) -> None:
        self._reset(stream)
        self.update(stream, 0, stop)

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        for a in range(start, stop, self.step):
            b = min(a + self.step, stop)
            self.known_items = max(self.known_items, stream.items_before(b))
            self._learn(stream.users[a:b].astype(np.int64), stream.items[a:b].astype(np.int64))

    def _negatives(self) -> Tensor:
        return torch.randint(
            0, self.known_items, (self.config.negatives,), generator=self.generator
        )

    def _learn(self, users: NDArray[np.int64], items: NDArray[np.int64]) -> None:
        if self.variant == "gru-state":
            loss = self._state_loss(users, items)
        else:
            before = self.windows.advance(users, items)
            seen = before[:, -1] >= 0
            if not seen.any():
                return
            queries = encode(self.encoder, self.item_weight, before[seen])
            positives = torch.from_numpy(items[seen])
            loss = sampled_softmax_loss(queries, positives, self._negatives(), self.item_weight)
        if loss is None:
            return
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def _state_loss(self, users: NDArray[np.int64], items: NDArray[np.int64]) -> Tensor | None:
        """Views in waves (a user's k-th view of the batch in wave k), each wave advancing
        its users' states; the loss of every view whose user had a previous one."""
        order = np.argsort(users, kind="stable")
        first = np.r_[0, np.flatnonzero(np.diff(users[order])) + 1]
        wave = np.empty(users.size, dtype=np.int64)
        wave[order] = np.arange(users.size) - np.repeat(first, np.diff(np.r_[first, users.size]))
        queries, positives = [], []
        for k in range(int(wave.max()) + 1):
            chosen = wave == k
            wave_users, wave_items = users[chosen], items[chosen]
            last = self.last[wave_users]
            had = last >= 0
            if had.any():
                state = self.cell(
                    self.item_weight[torch.from_numpy(last[had])],
                    self.hidden[torch.from_numpy(wave_users[had])],
                )
                queries.append(state)
                positives.append(torch.from_numpy(wave_items[had]))
                self.hidden[torch.from_numpy(wave_users[had])] = state.detach()
            self.last[wave_users] = wave_items
        if not queries:
            return None
        return sampled_softmax_loss(
            torch.cat(queries), torch.cat(positives), self._negatives(), self.item_weight
        )

    def scores(self, users: NDArray[np.int64], n_items: int) -> NDArray[np.floating[Any]]:
        with torch.no_grad():
            if self.variant == "gru-state":
                last = torch.from_numpy(self.last[users]).clamp(min=0)
                queries = self.cell(self.item_weight[last], self.hidden[torch.from_numpy(users)])
            else:
                queries = encode(self.encoder, self.item_weight, self.windows.of(users))
            scored: NDArray[np.floating[Any]] = (queries @ self.item_weight[:n_items].T).numpy()
        return scored


def measure(
    variant: str, change: dict[str, Any], step: int, stream: EncodedStream, train: int, stop: int
) -> dict[str, Any]:
    """Prequential over `[train, stop)` after learning `[0, train)`; temporal at `train`."""
    began = time.perf_counter()
    prototype = dataclasses.replace(SequenceConfig(), **change)
    system = SequenceSystem(variant, prototype, step)
    truncated = EncodedStream.encode(stream.events[:stop])
    system.fit(truncated, train)
    temporal = evaluate_temporal(system, temporal_truth(truncated, train)).summary()
    trace = run_prequential(truncated, system, train, 1000, 10, stop, fit=False)
    return {
        "variant": variant,
        "step": step,
        "config": dataclasses.asdict(prototype),
        "prequential_hr@10": float(np.nanmean(trace.common_hit)),
        "prequential_ndcg@10": float(np.nanmean(trace.common_ndcg)),
        "temporal_ndcg@10": temporal["ndcg@10"],
        "seconds": time.perf_counter() - began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=Plan().micro_batch)
    parser.add_argument("--variants", default="attention,gru-window,gru-state")
    parser.add_argument("--grid", default="", help="JSON list of config changes")
    parser.add_argument("--out", type=Path, default=RESULTS / "sequence_choice.json")
    args = parser.parse_args()
    pin_threads()
    torch.set_num_threads(1)
    plan = Plan()
    stream = EncodedStream.encode(movielens_100k())
    test_start = split_point(len(stream), 1.0 - plan.test_fraction)
    train_stop = split_point(test_start, 1.0 - plan.validation_fraction)
    changes = json.loads(args.grid) if args.grid else [{}]
    rows = []
    for change in changes:
        for variant in args.variants.split(","):
            row = measure(variant, change, args.step, stream, train_stop, test_start)
            print(json.dumps(row), flush=True)
            rows.append(row)
    report = {"machine": machine(), "validation": [train_stop, test_start], "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
