"""Negative sampling: uniform candidates (the kernel keeps the hardest one a user has not
watched), drawn in compiled code from a counter-based generator.

A pass over a micro-batch first draws a pool of `POOL` uniform item rows; each of its
candidates is a uniform pick of that pool (one random word gives 6 picks), and a pick
that is the triplet's positive is replaced by a uniform draw of the other rows. Each
candidate is so, by itself, a uniform draw of the catalogue other than the positive,
as before the pool; what changes is that a pass's candidates share its pool's rows,
whose vectors stay in cache while the pass reads them (a candidate drawn from the whole
item table waited on memory: 8 rows a triplet).

The generator is SplitMix64 (a 64-bit counter stepped by the golden ratio, then
mixed): one state word, a few multiplies a draw, no table, and a stream fixed by its
seed, so a learner seeded from its torch generator stays deterministic and resumes
exactly from a checkpoint of that generator. Bounded draws use Lemire's
multiply-shift with rejection, so they are exactly uniform.
"""

from __future__ import annotations

import numba as nb
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
LOW_32 = np.uint64(0xFFFFFFFF)
TWO_32 = np.uint64(1 << 32)
PICK_BITS = 10
POOL = 1 << PICK_BITS  # uniform rows drawn per pass (256 KiB of vectors at dim 64)
PICKS_PER_WORD = 64 // PICK_BITS
PICK_SHIFT, PICK_MASK = np.uint64(PICK_BITS), np.uint64(POOL - 1)
SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32))


@nb.njit(cache=True, nogil=True, inline="always")
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> SHIFTS[0])) * MIX_1
    z = (z ^ (z >> SHIFTS[1])) * MIX_2
    return z ^ (z >> SHIFTS[2])


@nb.njit(cache=True, nogil=True, inline="always")
def uniform_below(state: np.uint64, bound: np.uint64) -> tuple[np.uint64, np.int64]:
    """(next state, a uniform integer in [0, bound)); 1 <= bound < 2**32."""
    state = state + GOLDEN
    product = (_mix(state) >> SHIFTS[3]) * bound
    low = product & LOW_32
    if low < bound:  # rare: reject the few values that would bias the result
        floor = (TWO_32 - bound) % bound
        while low < floor:
            state = state + GOLDEN
            product = (_mix(state) >> SHIFTS[3]) * bound
            low = product & LOW_32
    return state, np.int64(product >> SHIFTS[3])


@nb.njit(cache=True, nogil=True, inline="always")
def draw_pool(state: np.uint64, n_items: int, pool: np.ndarray) -> np.uint64:
    """Fill `pool` with independent uniform item rows in [0, n_items); the next state."""
    bound = np.uint64(n_items)
    for k in range(pool.shape[0]):
        state, pool[k] = uniform_below(state, bound)
    return state


@nb.njit(cache=True, nogil=True, inline="always")
def draw_from_pool(
    state: np.uint64, pool: np.ndarray, positive: int, n_items: int, out: np.ndarray
) -> np.uint64:
    """Fill `out` with uniform picks of `pool` (`POOL` rows: a pick is `PICK_BITS` bits of
    a random word), a pick equal to `positive` replaced by a uniform draw of the other
    n_items - 1 rows; the next state."""
    word, left = np.uint64(0), 0
    for k in range(out.shape[0]):
        if left == 0:
            state = state + GOLDEN
            word, left = _mix(state), PICKS_PER_WORD
        row = pool[word & PICK_MASK]
        word, left = word >> PICK_SHIFT, left - 1
        if row == positive:
            state, row = uniform_below(state, np.uint64(n_items - 1))
            row += row >= positive
        out[k] = row
    return state


@nb.njit(cache=True, nogil=True)
def _fill(state: np.uint64, positives: np.ndarray, n_items: int, out: np.ndarray) -> np.uint64:
    pool = np.empty(POOL, dtype=np.int64)
    state = draw_pool(state, n_items, pool)
    for t in range(positives.shape[0]):
        state = draw_from_pool(state, pool, positives[t], n_items, out[t])
    return state


def uniform_candidates(positives: np.ndarray, n_items: int, count: int, seed: int) -> np.ndarray:
    """`(len(positives), count)` uniform negatives per positive, never the positive, picks
    of one pool: what the kernel draws in one pass with this seed (`seed >= 0`). Needs
    `n_items >= 2`."""
    if n_items < 2:
        raise ValueError("negative sampling needs at least two items")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    positives = np.ascontiguousarray(positives, dtype=np.int64)
    out = np.empty((positives.shape[0], count), dtype=np.int64)
    _fill(np.uint64(seed), positives, n_items, out)
    return out
