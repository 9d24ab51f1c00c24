"""The history model: YouTube-style candidate generation, learned online.

A user's vector is computed, never stored: the mean of the embeddings of their last
`history_length` viewed items, plus a residual MLP over that mean and the example's
age. Items have one embedding, which is also their published vector; lists are a
nearest-neighbour search over it. Learning is a sampled softmax of each view's item
against the batch's other items and `sampled_negatives` uniform draws, each logit
corrected by the log of how often its item is drawn (logQ). No user table: a user has
a vector after their first view, and a brand-new user gets the MLP's cold vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from consumers.model.base import Batch, Step
from consumers.model.config import SearchConfig
from consumers.model.neural import NeuralConfig, NeuralModel, Tape

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class HistoryConfig(NeuralConfig):
    """`history_length` last views make a user; `sampled_negatives` uniform draws per
    batch join the in-batch negatives; the residual MLP has one `hidden`-wide layer.
    The defaults were chosen on ML-100K's validation split at micro-batch 512
    (benchmarks/results/model_grid-history-step512*.json)."""

    learning_rate: float = 0.005
    init_std: float = 0.05
    history_length: int = 50
    sampled_negatives: int = 2048
    hidden: int = 256
    tied: bool = False  # one embedding per item for the history and the output
    # item frequencies behind the in-batch logQ forget with this half-life in views
    # (0: all-time counts); recent popularity is what the next views follow
    frequency_half_life: int = 2000

    def __post_init__(self) -> None:
        NeuralConfig.__post_init__(self)
        if self.history_length < 1 or self.sampled_negatives < 0 or self.hidden < 1:
            raise ValueError("history_length, hidden >= 1 and sampled_negatives >= 0")


class HistoryTower(NeuralModel):
    """User vector = mean of recent item embeddings + MLP(mean, age); item vector = its
    embedding. Invariant: `recent[u]` is a ring of user row u's last views (-1: empty),
    `pushed[u]` how many views went into it."""

    config: HistoryConfig

    def __init__(self, config: HistoryConfig, search: SearchConfig | None = None) -> None:
        super().__init__(config, search)
        dim = config.dim
        self.embeddings = self.add_table("item", "item", dim, config.init_std)
        self.outputs = (
            self.embeddings
            if config.tied
            else self.add_table("item_output", "item", dim, config.init_std)
        )
        self.hidden = self.add_layer("hidden", dim + 1, config.hidden)
        self.output = self.add_layer("output", config.hidden, dim)
        self.recent = torch.full((0, config.history_length), -1, dtype=torch.int64)
        self.pushed = torch.zeros(0, dtype=torch.int64)
        self.item_counts = torch.zeros(0, dtype=torch.float64)
        self.newest = torch.zeros(1, dtype=torch.float64)  # latest view time seen

    @property
    def name(self) -> str:
        return "history"

    def _grow_users(self, users: int) -> None:
        extra = users - self.recent.shape[0]
        if extra > 0:
            empty = torch.full((extra, self.config.history_length), -1, dtype=torch.int64)
            self.recent = torch.cat([self.recent, empty])
            self.pushed = torch.cat([self.pushed, torch.zeros(extra, dtype=torch.int64)])
        extra = len(self.items) - self.item_counts.shape[0]
        if extra > 0:
            self.item_counts = torch.cat(
                [self.item_counts, torch.zeros(extra, dtype=torch.float64)]
            )

    def _forget_row(self, row: int) -> None:
        self.recent[row] = -1
        self.pushed[row] = 0

    def _push(self, users: np.ndarray, items: np.ndarray) -> None:
        """Append views, in order, to their users' rings."""
        recent, pushed, length = self.recent.numpy(), self.pushed.numpy(), self.recent.shape[1]
        for user, item in zip(users.tolist(), items.tolist(), strict=True):
            recent[user, pushed[user] % length] = item
            pushed[user] += 1

    def _queries(
        self, user_rows: Tensor, ages: Tensor, tape: Tape | None, extra: Tensor
    ) -> tuple[Tensor, Tensor]:
        """User vectors from their rings, and the output vectors of `extra` item rows
        (read in the same pass when tied, so a step moves each row once)."""
        recent = self.recent[user_rows.cpu()].to(self.device)
        valid = recent >= 0
        watched = int(valid.sum())
        tied = self.outputs is self.embeddings
        rows = torch.cat([recent[valid], extra]) if tied else recent[valid]
        if tape is None:
            read = self.embeddings.weight[rows]
            outputs = self.outputs.weight[extra]
            layers = [table.weight for pair in (self.hidden, self.output) for table in pair]
        else:
            read = tape.rows(self.embeddings, rows)
            outputs = read[watched:] if tied else tape.rows(self.outputs, extra)
            layers = [tape.dense(table) for pair in (self.hidden, self.output) for table in pair]
        slots = torch.zeros(*recent.shape, self.config.dim, device=self.device)
        slots[valid] = read[:watched]
        mean = slots.sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        hidden_weight, hidden_bias, output_weight, output_bias = layers
        hidden = torch.relu(torch.cat([mean, ages[:, None]], 1) @ hidden_weight.T + hidden_bias)
        return mean + hidden @ output_weight.T + output_bias, outputs

    def _user_vectors(self, user_rows: Tensor) -> Tensor:
        ages = torch.zeros(user_rows.shape[0], device=self.device)  # served now: age 0
        empty = torch.zeros(0, dtype=torch.int64, device=self.device)
        return self._queries(user_rows, ages, None, empty)[0]

    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        return self.outputs.weight[item_rows]

    def learn(self, batch: Batch) -> Step:
        """One sampled-softmax step over the batch, users as they were before it; then
        the views join the users' histories and rings."""
        users, items, learned = self._begin(batch)
        if users.size == 0:
            return Step(float("nan"), learned, np.zeros(0, dtype=np.int64))
        if self.config.frequency_half_life:
            self.item_counts *= 0.5 ** (users.size / self.config.frequency_half_life)
        self.item_counts.index_add_(
            0, torch.from_numpy(items), torch.from_numpy(batch.weights.astype(np.float64))
        )
        self.newest = torch.maximum(self.newest, torch.tensor([batch.timestamps.max()]))
        loss, moved = self._step(users, items, batch)
        if not np.isfinite(loss):
            self.skipped_events += users.size
            learned[:] = False
            self.history.remove(users, items)
        self._push(users[learned], items[learned])
        return Step(loss, learned, moved)

    def _step(self, users: np.ndarray, items: np.ndarray, batch: Batch) -> tuple[float, np.ndarray]:
        """The weighted mean sampled-softmax loss, stepped unless non-finite (then nan),
        and the output rows it moved."""
        config, device = self.config, self.device
        catalogue = len(self.items)
        drawn = torch.randint(0, catalogue, (config.sampled_negatives,), generator=self.generator)
        positives = torch.from_numpy(items)
        candidates = torch.cat([positives, drawn]).to(device)
        hours = (self.newest.item() - batch.timestamps) / SECONDS_PER_HOUR
        ages = torch.from_numpy(np.log1p(np.maximum(hours, 0.0)).astype(np.float32)).to(device)
        tape = Tape()
        queries, vectors = self._queries(self._device_rows(users), ages, tape, candidates)
        logits = queries @ vectors.T
        size = users.size
        # an item in the batch was drawn at least once, whatever its views' weights
        counts = self.item_counts
        frequency = counts[positives].clamp(min=1.0) / counts.sum().clamp(min=1.0)
        in_batch = torch.log(size * frequency).float().to(device)
        uniform = torch.full(
            (config.sampled_negatives,), np.log(config.sampled_negatives / catalogue), device=device
        )
        logits = logits - torch.cat([in_batch, uniform])[None, :]
        target = candidates[:size]
        accidental = candidates[None, :] == target[:, None]
        accidental[torch.arange(size), torch.arange(size)] = False
        logits = logits.masked_fill(accidental, float("-inf"))
        weights = torch.from_numpy(batch.weights.astype(np.float32)).to(device)
        losses = torch.nn.functional.cross_entropy(
            logits, torch.arange(size, device=device), reduction="none"
        )
        loss = (losses * weights).sum() / weights.sum()
        if not torch.isfinite(loss):
            return float("nan"), np.zeros(0, dtype=np.int64)
        loss.backward()  # type: ignore[no-untyped-call]
        tape.step(self.optimizer)
        return float(loss.detach()), tape.rows_read(self.outputs).cpu().numpy()

    def _extra_state(self) -> dict[str, Tensor]:
        return {
            "recent": self.recent,
            "recent_pushed": self.pushed,
            "item_counts": self.item_counts,
            "newest": self.newest,
        }

    def _load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        self.recent = tensors["recent"].clone()
        self.pushed = tensors["recent_pushed"].clone()
        self.item_counts = tensors["item_counts"].clone()
        self.newest = tensors["newest"].clone()
