"""The learning step, compiled: pairwise (BPR or triplet) updates applied triplet by triplet.

Each positive (user, item) is paired with the highest-scoring of its uniform candidate
negatives that the user has not watched (the first candidate when all are watched),
and the three rows move at once, in place, like implicit's BPR and Hogwild: later
triplets of a batch see the earlier ones' updates, and workers sharing the tables
update rows without locks. Row-wise Adagrad (one accumulator per row, as in TorchRec)
or plain SGD. Every pass of a micro-batch runs in one call.

Candidates are drawn inside the kernel (`consumers/model/sampling.py`, a counter-based
generator seeded per call): each pass picks them from its own pool of uniform rows,
whose vectors stay in cache, a few triplets ahead, so the rows not yet cached and the
candidates' watched-table slots are requested from memory before they are read. All
candidates are scored first, then the watched table is probed from the best down: the
hardest candidate is rarely watched, so one probe, not one per candidate, is the usual
cost.

A triplet whose loss or new rows would not be finite (an overflowing weight, a
diverging row) is skipped and reported, and the tables stay finite.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from consumers.model.config import ModelConfig
from consumers.model.history import Chains, add_pairs, contains_pair, home_slot
from consumers.model.prefetch import prefetch
from consumers.model.sampling import POOL, draw_from_pool, draw_pool

# Reassociation (vectorised dot products) and fused multiply-adds, without assuming
# finite values (with "nsz" and "arcp" too, LLVM folded the checks below away).
FAST_MATH = {"reassoc", "contract"}
AHEAD = 6  # triplets whose rows are requested before they are needed
CACHE_LINE_FLOATS = 16
# numba's on-disk cache of this module is keyed on this file alone: bump this after
# editing the compiled code it calls (history.py, sampling.py, prefetch.py), or stale
# machine code is loaded.
COMPILED_DEPENDENCIES_VERSION = 2


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
def _request_row(weight: np.ndarray, row: int) -> None:
    vector = weight[row]
    for start in range(0, vector.shape[0], CACHE_LINE_FLOATS):
        prefetch(vector, start)


@nb.njit(cache=True, nogil=True, inline="always")
def _request(
    user_weight: np.ndarray,
    user_accumulator: np.ndarray,
    item_weight: np.ndarray,
    item_accumulator: np.ndarray,
    watched: np.ndarray,
    user: int,
    positive: int,
    candidates: np.ndarray,
) -> None:
    """Ask for a triplet's rows: the user's and positive's, with their accumulators, and
    every candidate's vector and watched-table slot (only the chosen negative's
    accumulator is read, later)."""
    _request_row(user_weight, user)
    prefetch(user_accumulator, user)
    _request_row(item_weight, positive)
    prefetch(item_accumulator, positive)
    if candidates.shape[0] > 1:
        for k in range(candidates.shape[0]):
            prefetch(watched, home_slot(watched, user, candidates[k]))


@nb.njit(cache=True, nogil=True, inline="always")
def _hardest(
    item_weight: np.ndarray,
    watched: np.ndarray,
    u: np.ndarray,
    user: int,
    candidates: np.ndarray,
    scores: np.ndarray,
) -> int:
    """The highest-scoring candidate `user` has not watched (the first on ties; the first
    candidate if all are watched). Scores every candidate, keeping the best as it goes
    (no branch to mispredict), then probes best first."""
    count, dim = candidates.shape[0], u.shape[0]
    best, at = -np.inf, -1
    for k in range(count):
        c = item_weight[candidates[k]]
        score = np.float32(0.0)
        for d in range(dim):
            score += u[d] * c[d]
        scores[k] = score
        better = score > best
        best = float(score) if better else best
        at = k if better else at
    while at >= 0:  # else every remaining score is -inf or nan (never the hardest)
        if not contains_pair(watched, user, candidates[at]):
            return int(candidates[at])
        scores[at] = -np.inf
        best, at = -np.inf, -1
        for k in range(count):
            better = scores[k] > best
            best = float(scores[k]) if better else best
            at = k if better else at
    return int(candidates[0])


@nb.njit(cache=True, nogil=True, fastmath=FAST_MATH)
def pairwise_step(
    user_weight: np.ndarray,
    user_accumulator: np.ndarray,
    item_weight: np.ndarray,
    item_accumulator: np.ndarray,
    watched: np.ndarray,
    chains: Chains,
    used: int,
    added: np.ndarray,
    users: np.ndarray,
    positives: np.ndarray,
    weights: np.ndarray,
    candidates: np.ndarray,
    negatives: np.ndarray,
    seed: int,
    learning_rate: float,
    l2: float,
    margin: float,
    bpr: bool,
    adagrad: bool,
) -> tuple[float, float, int, int]:
    """Record a batch's views in a `History` and learn it in place, `negatives.shape[0]`
    passes over it: (sum of weighted losses, sum of weights) over the first pass's
    triplets learned, how many views that pass skipped because an update would leave a
    loss or row non-finite, and how many views were new pairs (`added` marks them).

    `watched, chains, used` are what `History.room_for(len(users))` returns: the views
    go in before the first triplet (a user's other positives here are never their
    negatives), and the count of new pairs goes to `History.inserted`. `candidates` is
    `(batch, count)` item rows: with `seed >= 0` a buffer the kernel fills with fresh
    uniform draws for every pass (`sampling.uniform_candidates` draws the first, seeded
    by `seed`), with `seed < 0` the candidates to use in every pass. `negatives[p, t]`
    gets triplet t's negative in pass p, or -1 where it was not learned; a view skipped
    in the first pass is not learned in later ones (its pair stays in `watched`: the
    caller takes it out).
    """
    batch, count = candidates.shape
    passes = negatives.shape[0]
    dim = user_weight.shape[1]
    n_items = item_weight.shape[0]
    rate, decay = np.float32(learning_rate), np.float32(l2)
    draw = seed >= 0
    state = np.uint64(seed if draw else 0)
    pool = np.empty(POOL, dtype=np.int64)
    scores = np.empty(count, dtype=np.float32)
    grad_user = np.empty(dim, dtype=np.float32)
    grad_positive = np.empty(dim, dtype=np.float32)
    grad_negative = np.empty(dim, dtype=np.float32)
    new_user = np.empty(dim, dtype=np.float32)
    new_positive = np.empty(dim, dtype=np.float32)
    new_negative = np.empty(dim, dtype=np.float32)
    loss_sum = weight_sum = 0.0
    skipped = 0
    new = add_pairs(watched, chains, used, users, positives, added)
    for step in range(passes):
        if draw:
            state = draw_pool(state, n_items, pool)
            for k in range(POOL):
                _request_row(item_weight, pool[k])
            for t in range(min(AHEAD, batch)):
                state = draw_from_pool(state, pool, positives[t], n_items, candidates[t])
        for t in range(batch):
            ahead = t + AHEAD
            if ahead < batch:  # memory latency, not arithmetic, bounds this loop
                if draw:
                    state = draw_from_pool(
                        state, pool, positives[ahead], n_items, candidates[ahead]
                    )
                _request(
                    user_weight,
                    user_accumulator,
                    item_weight,
                    item_accumulator,
                    watched,
                    users[ahead],
                    positives[ahead],
                    candidates[ahead],
                )
            if step > 0 and negatives[0, t] < 0:  # skipped in the first pass
                negatives[step, t] = -1
                continue
            user, positive = users[t], positives[t]
            u = user_weight[user]
            if count > 1:
                negative = _hardest(item_weight, watched, u, user, candidates[t], scores)
            else:
                negative = candidates[t, 0]
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
                    loss, dloss = float(math.log1p(grow) - diff), -1.0 / (1.0 + grow)
            else:  # max(0, margin - diff), d/d diff = -1 inside the margin
                loss = max(float(margin - diff), 0.0)
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
            if not (
                _finite(total + acc_user + acc_positive + acc_negative) and _finite(loss * weight)
            ):
                negatives[step, t] = -1
                if step == 0:
                    skipped += 1
                continue
            for d in range(dim):
                u[d], p[d], q[d] = new_user[d], new_positive[d], new_negative[d]
            user_accumulator[user] = acc_user
            item_accumulator[positive] = acc_positive
            item_accumulator[negative] = acc_negative
            negatives[step, t] = negative
            if step == 0:
                loss_sum += loss * weight
                weight_sum += weight
    return loss_sum, weight_sum, skipped, new


def hyper_parameters(config: ModelConfig) -> tuple[float, float, float, bool, bool]:
    """`pairwise_step`'s trailing arguments for a learner's configuration."""
    bpr, adagrad = config.loss == "bpr", config.optimizer == "adagrad"
    return config.learning_rate, config.l2, config.margin, bpr, adagrad
