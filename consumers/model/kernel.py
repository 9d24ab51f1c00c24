"""The learning step, compiled: pairwise (BPR or triplet) updates applied triplet by triplet.

Each positive (user, item) is paired with the highest-scoring of its uniform candidate
negatives that the user has not watched (the first candidate when all are watched),
and the three rows move at once, in place, like implicit's BPR and Hogwild: later
triplets of a batch see the earlier ones' updates, and workers sharing the tables
update rows without locks. Row-wise Adagrad (one accumulator per row, as in TorchRec)
or plain SGD.

A triplet whose loss or new rows would not be finite (an overflowing weight, a
diverging row) is skipped and reported, and the tables stay finite.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from consumers.model.config import ModelConfig
from consumers.model.history import contains_pair, home_slot
from consumers.model.prefetch import prefetch

# Reassociation (vectorised dot products) and fused multiply-adds, without assuming
# finite values (with "nsz" and "arcp" too, LLVM folded the checks below away).
FAST_MATH = {"reassoc", "contract"}
AHEAD = 6  # triplets whose rows are requested before they are needed
CACHE_LINE_FLOATS = 16


@nb.njit(cache=True, nogil=True)
def _finite(value: float) -> bool:
    """Compiled without fast-math, so the check survives optimisation of the caller."""
    return math.isfinite(value)


@nb.njit(cache=True, nogil=True, inline="always")
def _rate(accumulator: float, learning_rate: np.float32, adagrad: bool) -> np.float32:
    """The step size of a row whose (updated) Adagrad accumulator is `accumulator`."""
    if not adagrad:
        return learning_rate
    return np.float32(learning_rate / (math.sqrt(accumulator) + 1e-8))


@nb.njit(cache=True, nogil=True, inline="always")
def _request_rows(weight: np.ndarray, accumulator: np.ndarray, row: int, line_floats: int) -> None:
    vector = weight[row]
    for start in range(0, vector.shape[0], line_floats):
        prefetch(vector, start)
    prefetch(accumulator, row)


@nb.njit(cache=True, nogil=True, fastmath=FAST_MATH)
def pairwise_step(
    user_weight: np.ndarray,
    user_accumulator: np.ndarray,
    item_weight: np.ndarray,
    item_accumulator: np.ndarray,
    watched: np.ndarray,
    users: np.ndarray,
    positives: np.ndarray,
    candidates: np.ndarray,
    weights: np.ndarray,
    negatives: np.ndarray,
    learning_rate: float,
    l2: float,
    margin: float,
    bpr: bool,
    adagrad: bool,
) -> tuple[float, float, int]:
    """Learn one batch in place: (sum of weighted losses, sum of weights) over the
    triplets learned, and how many were skipped.

    `watched` is a `History`'s pair table; `candidates` is `(batch, count)` item rows.
    Each triplet's negative is written to `negatives`, or -1 where the triplet was
    skipped because its update would leave a loss or row non-finite.
    """
    batch, count = candidates.shape
    dim = user_weight.shape[1]
    rate, decay = np.float32(learning_rate), np.float32(l2)
    grad_user = np.empty(dim, dtype=np.float32)
    grad_positive = np.empty(dim, dtype=np.float32)
    grad_negative = np.empty(dim, dtype=np.float32)
    new_user = np.empty(dim, dtype=np.float32)
    new_positive = np.empty(dim, dtype=np.float32)
    new_negative = np.empty(dim, dtype=np.float32)
    loss_sum = weight_sum = 0.0
    skipped = 0
    for t in range(batch):
        if t + AHEAD < batch:  # memory latency, not arithmetic, bounds this loop
            ahead = t + AHEAD
            _request_rows(user_weight, user_accumulator, users[ahead], CACHE_LINE_FLOATS)
            _request_rows(item_weight, item_accumulator, positives[ahead], CACHE_LINE_FLOATS)
            for k in range(count):
                candidate = candidates[ahead, k]
                _request_rows(item_weight, item_accumulator, candidate, CACHE_LINE_FLOATS)
                if count > 1:
                    prefetch(watched, home_slot(watched, users[ahead], candidate))
        user, positive = users[t], positives[t]
        u = user_weight[user]
        negative = candidates[t, 0]
        if count > 1:
            best = -np.inf
            for k in range(count):
                candidate = candidates[t, k]
                if contains_pair(watched, user, candidate):
                    continue
                score = np.float32(0.0)
                c = item_weight[candidate]
                for d in range(dim):
                    score += u[d] * c[d]
                if score > best:
                    best, negative = score, candidate
        p, q = item_weight[positive], item_weight[negative]
        diff = np.float32(0.0)
        for d in range(dim):
            diff += u[d] * (p[d] - q[d])
        weight = weights[t]
        if bpr:  # -log sigmoid(diff), d/d diff = -sigmoid(-diff)
            if diff > 0:
                shrink = math.exp(-diff)
                loss, dloss = math.log1p(shrink), -shrink / (1.0 + shrink)
            else:
                grow = math.exp(diff)
                loss, dloss = math.log1p(grow) - diff, -1.0 / (1.0 + grow)
        else:  # max(0, margin - diff), d/d diff = -1 inside the margin
            loss = max(margin - diff, 0.0)
            dloss = -1.0 if margin - diff > 0 else 0.0
        g = np.float32(dloss * weight)
        squares_user = squares_positive = squares_negative = np.float32(0.0)
        for d in range(dim):
            a = g * (p[d] - q[d]) + decay * u[d]
            b = g * u[d] + decay * p[d]
            c = decay * q[d] - g * u[d]
            grad_user[d], grad_positive[d], grad_negative[d] = a, b, c
            squares_user += a * a
            squares_positive += b * b
            squares_negative += c * c
        acc_user = user_accumulator[user]
        acc_positive = item_accumulator[positive]
        acc_negative = item_accumulator[negative]
        if adagrad:
            acc_user += squares_user / dim
            acc_positive += squares_positive / dim
            acc_negative += squares_negative / dim
        rate_user = _rate(acc_user, rate, adagrad)
        rate_positive = _rate(acc_positive, rate, adagrad)
        rate_negative = _rate(acc_negative, rate, adagrad)
        total = np.float32(0.0)
        for d in range(dim):
            a = u[d] - rate_user * grad_user[d]
            b = p[d] - rate_positive * grad_positive[d]
            c = q[d] - rate_negative * grad_negative[d]
            new_user[d], new_positive[d], new_negative[d] = a, b, c
            total += a + b + c
        if not (_finite(total + acc_user + acc_positive + acc_negative) and _finite(loss * weight)):
            negatives[t] = -1
            skipped += 1
            continue
        for d in range(dim):
            u[d], p[d], q[d] = new_user[d], new_positive[d], new_negative[d]
        user_accumulator[user] = acc_user
        item_accumulator[positive] = acc_positive
        item_accumulator[negative] = acc_negative
        negatives[t] = negative
        loss_sum += loss * weight
        weight_sum += weight
    return loss_sum, weight_sum, skipped


def hyper_parameters(config: ModelConfig) -> tuple[float, float, float, bool, bool]:
    """`pairwise_step`'s trailing arguments for a learner's configuration."""
    bpr, adagrad = config.loss == "bpr", config.optimizer == "adagrad"
    return config.learning_rate, config.l2, config.margin, bpr, adagrad
