"""torch-rechub's matching models over the user's last `history` items: `YoutubeDNN`
(user tower: an MLP over the user-id embedding and the mean of the history's item
embeddings), `GRU4Rec` (the same MLP over the user-id embedding and a GRU's last state over
the history) and `SASRec` (causal self-attention over the history, no user id; its output
at the last view is the user). Item tower: the item-id embedding. YoutubeDNN and GRU4Rec
L2-normalise both and divide by `temperature` (torch-rechub's list-wise setup); SASRec
scores raw dot products, as its paper does. All are trained with a softmax over the
positive and `negatives` uniform items, Adam. The logits are taken from the towers here:
GRU4Rec's own `forward` sums over the wrong axis for list-wise negatives, and SASRec's
scores its training sequences position by position.

Driven like an online learner: `fit` takes `epochs` passes over the prefix in time order
in mini-batches of `batch`; each `update` takes the step's events once. The model is sized
to the whole stream (rows of ids not seen yet are never positives nor candidates);
negatives are drawn from the items seen before the mini-batch's end. Item index 0 pads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import Scores


def padded(
    histories: Iterable[NDArray[np.int64]], length: int, left: bool = True
) -> NDArray[np.int64]:
    """One row per history: its last `length` items +1, padded with 0 on the left (on
    the right with `left=False`: SASRec reads a user at the last non-zero position)."""
    rows = list(histories)
    out = np.zeros((len(rows), length), dtype=np.int64)
    for row, seen in enumerate(rows):
        tail = seen[-length:]
        start = length - tail.size if left else 0
        out[row, start : start + tail.size] = tail + 1
    return out


ARCHITECTURES = ("youtubednn", "gru4rec", "sasrec")


class RechubTowerSystem:
    def __init__(
        self,
        architecture: str,
        seed: int,
        factors: int = 64,
        step: int = 64,
        name: str | None = None,
        history: int = 50,
        negatives: int = 20,
        learning_rate: float = 0.002,
        epochs: int = 5,
        batch: int = 256,
        temperature: float = 0.05,
        dropout: float = 0.2,
    ) -> None:
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown torch-rechub architecture {architecture!r}")
        self.architecture = architecture
        self.name = name or f"rechub-{architecture}"
        self.step = step
        self.seed = seed
        self.factors = factors
        self.history = history
        self.negatives = negatives
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch = batch
        self.temperature = temperature
        self.dropout = dropout  # SASRec's (0.2: its paper's for MovieLens)
        self._model: Any = None
        self._optimizer: Any = None
        self._stream: EncodedStream | None = None
        self._learned = 0
        self._rng = np.random.default_rng(seed)

    def _build(self, stream: EncodedStream) -> None:
        from torch_rechub.basic.features import SequenceFeature, SparseFeature
        from torch_rechub.models.matching import GRU4Rec, SASRec, YoutubeDNN

        torch.manual_seed(self.seed)
        items, dim = stream.n_items + 1, self.factors
        if self.architecture == "sasrec":
            # SASRec reads its sequence under the name "seq"
            sequence = SequenceFeature("seq", items, dim, pooling="concat", padding_idx=0)
            self._model = SASRec([sequence], self.history, self.dropout, num_blocks=2)
            self._items = self._model.item_emb.embed_dict["seq"]
        else:
            user = [SparseFeature("user", stream.n_users, embed_dim=dim)]
            pooling = "mean" if self.architecture == "youtubednn" else "concat"
            history = [
                SequenceFeature(
                    "history", items, dim, pooling=pooling, shared_with="item", padding_idx=0
                )
            ]
            item = [SparseFeature("item", items, embed_dim=dim)]
            negatives = [
                SequenceFeature("negatives", items, dim, pooling="concat", shared_with="item")
            ]
            tower = {"dims": [2 * dim, dim]}
            if self.architecture == "youtubednn":
                self._model = YoutubeDNN(user + history, item, negatives, tower, self.temperature)
            else:
                self._model = GRU4Rec(user, history, item, negatives, tower)  # a 2-layer GRU
            self._items = self._model.embedding.embed_dict["item"]
        self._optimizer = torch.optim.Adam(self._model.parameters(), lr=self.learning_rate)
        self._stream = stream

    def fit(self, stream: EncodedStream, stop: int) -> None:
        self._build(stream)
        for _ in range(self.epochs):
            self._learn(stream, 0, stop)
        self._learned = stop

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        self._learn(stream, start, stop)
        self._learned = stop

    def _learn(self, stream: EncodedStream, start: int, stop: int) -> None:
        self._model.mode = None
        for a in range(start, stop, self.batch):
            b = min(a + self.batch, stop)
            # the tower's batch norm cannot take a batch of one in training mode: such a
            # batch is learned with the running statistics
            self._model.train(b - a > 1)
            known = stream.items_before(b)
            users = self._user_vectors(stream.users[a:b], [stream.history(p) for p in range(a, b)])
            candidates = np.concatenate(
                [
                    stream.items[a:b, None] + 1,
                    self._rng.integers(1, known + 1, size=(b - a, self.negatives)),
                ],
                axis=1,
            )
            # (batch, 1 + negatives); the positive is column 0
            logits = (users[:, None, :] * self._item_vectors(torch.from_numpy(candidates))).sum(-1)
            loss = torch.nn.functional.cross_entropy(
                logits / self.temperature, torch.zeros(b - a, dtype=torch.long)
            )
            self._optimizer.zero_grad()
            loss.backward()
            self._optimizer.step()

    def _user_vectors(
        self, users: NDArray[np.int64], histories: list[NDArray[np.int64]]
    ) -> torch.Tensor:
        """(users, dim): the user tower over each user's last `history` items."""
        if self.architecture != "sasrec":
            x = {"user": torch.from_numpy(users)}
            x["history"] = torch.from_numpy(padded(histories, self.history))
            return self._model.user_tower(x).squeeze(1)  # type: ignore[no-any-return]
        sequences = padded(histories, self.history, left=False)
        one = sequences.shape[0] == 1  # SASRec squeezes its batch axis away: give it two rows
        x = {"seq": torch.from_numpy(np.repeat(sequences, 2, 0) if one else sequences)}
        vectors = self._model.user_tower(x).squeeze(1)
        return vectors[:1] if one else vectors  # type: ignore[no-any-return]

    def _item_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """The item tower of item indices (+1): L2-normalised, but SASRec's raw."""
        vectors = self._items(rows)
        if self.architecture == "sasrec":
            return vectors  # type: ignore[no-any-return]
        return torch.nn.functional.normalize(vectors, p=2, dim=-1)

    def scores(self, users: NDArray[np.int64], n_items: int) -> Scores:
        stream = self._stream
        assert stream is not None
        histories = [stream.user_items_before(user, self._learned) for user in users.tolist()]
        self._model.eval()
        with torch.no_grad():
            self._model.mode = "user"
            user_vectors = self._user_vectors(users, histories)
            self._model.mode = None
            item_vectors = self._item_vectors(torch.arange(1, n_items + 1))
        return (user_vectors @ item_vectors.T).numpy()  # type: ignore[no-any-return]
