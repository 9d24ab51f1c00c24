"""Next-item prediction from the order of a user's views (the `sequence` model).

A user is the sequence of what they watched: their vector is an encoding of their last
`window` item rows (oldest first, -1 padding on the left), and the score of an item is
its dot product with that vector. Trained per micro-batch on each view's item as the
next item of the window before it, with a sampled softmax over uniform draws of the
item table. Pure torch: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from consumers.model.base import Rows

EncoderName = Literal["attention", "gru"]
PAD = -1


@dataclass(frozen=True, slots=True)
class SequenceConfig:
    """Hyper-parameters of the sequence model (chosen on ML-100K's validation stretch)."""

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

    def advance(self, users: Rows, items: Rows) -> Rows:
        """Append each view in order; the window each view saw before it: [views, size]."""
        before = np.empty((users.size, self.size), dtype=np.int64)
        rows = self.rows
        for j, (user, item) in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
            before[j] = rows[user]
            rows[user, :-1] = rows[user, 1:]
            rows[user, -1] = item
        return before

    def of(self, users: Rows) -> Rows:
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


def encode(encoder: nn.Module, item_weight: Tensor, windows: Rows) -> Tensor:
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
