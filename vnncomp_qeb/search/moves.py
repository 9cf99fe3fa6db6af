"""Iterated local search over a grid of input values, scoring every single-input move at once.

On a snapped input (an integer grid) the exact margin is piecewise constant: gradients see
nothing there, and the deepest points sit at interior grid values as often as at box corners. A
climb scores every move of one input to each of its grid values, applies the best combination of
the improving moves (the top 1, 2, 4, … by gain, whichever the exact evaluator scores best), and
repeats until no move improves. From the best point so far a kick sets a few random inputs to
random grid values and climbs again, keeping the better end (iterated local search).

Scoring the K·n moves as K·n forward passes is what makes a plain climb slow (0.24 s a round on
QEBVerif's P4 with 7 values × 784 pixels). :class:`MoveScorer` runs the ops between the input and
the first dense affine layers (snaps, scalings: pointwise ops) once per grid value, updates those
layers by one weight row per move, and runs only the rest of the graph on the moves. Its scores
only guide the climb: every point the climb keeps is scored by the full evaluator, and the caller
replays witnesses in onnxruntime.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from vnncomp_qeb.ir.graph import Graph

CHUNK = 1 << 19  # input elements per batch of moves
GROUPS = (1, 2, 4, 8, 16, 32, 64)  # sizes of the top-gain move sets a climb round compares
KICK_FRACTION = (1 / 800, 1 / 80)  # share of the free inputs a kick resets (range)
RESTART_AFTER = 20  # kicks without a gain before the search restarts from the next start
MOST_VALUES = 16  # grid values tried per input (evenly spaced beyond this)

Margin = Callable[[np.ndarray], np.ndarray]  # outputs (B, m) -> (B,) how deep into the unsafe set


def grid_values(lo: np.ndarray, hi: np.ndarray, integer: bool, most: int = MOST_VALUES) -> np.ndarray:
    """(K, n) values each input may take: every integer in ``[lo, hi]`` (evenly spaced ones
    beyond ``most``) on an integer grid, else the two ends and the middle."""
    if not integer:
        return np.vstack([lo, (lo + hi) / 2, hi])
    span = int(np.max(hi - lo, initial=0))
    if span + 1 <= most:
        return np.minimum(lo[None] + np.arange(span + 1)[:, None], hi[None])
    return np.round(lo[None] + np.linspace(0.0, 1.0, most)[:, None] * (hi - lo)[None])


class MoveScorer:
    """Exact margins of points and of every single-input move from one point."""

    def __init__(self, graph: Graph, margin: Margin):
        self.graph, self.margin = graph, margin

    def full(self, x: np.ndarray) -> np.ndarray:
        """Margins (B,) of whole points (B, n)."""
        return self.margin(self.graph.evaluate(x))

    def moves(self, x: np.ndarray, values: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """(K, n): the margin of ``x`` with input ``j`` set to ``values[k, j]`` (−inf for the
        moves not scored by ``deadline``: on a large network one table takes seconds)."""
        K, n = values.shape
        out = np.full(K * n, -np.inf)
        flat_vals, cols = values.reshape(-1), np.tile(np.arange(n), K)
        step = max(1, CHUNK // max(1, n))  # batches that stay in cache run faster than one big one
        for s in range(0, K * n, step):
            if deadline is not None and s and time.monotonic() > deadline:
                break
            X = np.repeat(x[None], min(step, K * n - s), axis=0)
            X[np.arange(X.shape[0]), cols[s:s + step]] = flat_vals[s:s + step]
            out[s:s + step] = self.full(X)
        return out.reshape(K, n)


def climb(scorer: MoveScorer, x: np.ndarray, m: float, values: np.ndarray, deadline: float,
          ) -> tuple[np.ndarray, float]:
    """Greedy ascent from ``x`` (exact margin ``m``) over the grid ``values``: (point, margin)."""
    n = x.size
    cols = np.arange(n)
    lo, hi = values.min(axis=0), values.max(axis=0)
    while time.monotonic() < deadline:
        # the ends and the neighbours on the grid (a larger set costs more than it finds)
        options = np.vstack([lo, hi, np.maximum(x - 1, lo), np.minimum(x + 1, hi)]) if values.shape[0] > 4 else values
        M = scorer.moves(x, options, deadline)
        k = np.argmax(M, axis=0)
        gain = M[k, cols] - m
        if gain.max() <= 0:
            break
        order = np.argsort(-gain)
        tried = []
        for size in GROUPS:
            pick = order[:size]
            pick = pick[gain[pick] > 0]
            y = x.copy()
            y[pick] = options[k[pick], pick]
            tried.append(y)
            if pick.size < size:
                break
        T = np.vstack(tried)
        mt = scorer.full(T)
        j = int(np.argmax(mt))
        if mt[j] <= m:  # the moves' scores were right one by one, not together
            break
        x, m = T[j], float(mt[j])
    return x, m


def iterated_search(graph: Graph, margin: Margin, starts: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    integer: bool, deadline: float, rng: np.random.Generator,
                    check: Callable[[np.ndarray], object] | None = None,
                    stats: dict | None = None) -> tuple[np.ndarray, float, object | None]:
    """Climb from the best of ``starts`` (B, n; snapped into the box ``[lo, hi]`` and, on an
    ``integer`` grid, rounded), over :func:`grid_values`, then kick and climb again until
    ``deadline`` or a point with margin ≥ 0 that ``check`` accepts (its result is returned;
    without ``check`` the first such point ends the search). Returns (best point, its margin,
    what ``check`` returned or None); ``stats`` (if given) gets the number of climbs."""
    scorer = MoveScorer(graph, margin)
    values = grid_values(lo, hi, integer)
    starts = np.clip(np.round(starts) if integer else starts, values.min(axis=0), values.max(axis=0))
    m0 = scorer.full(starts)
    order = list(np.argsort(-m0))
    free = np.flatnonzero(values.max(axis=0) > values.min(axis=0))
    lo_k, hi_k = (max(1, int(f * free.size)) for f in KICK_FRACTION)
    best_x, best_m = starts[order[0]].copy(), float(m0[order[0]])
    x, m, stale = None, -np.inf, 0
    rejected = set()
    while time.monotonic() < deadline:
        if x is None:  # (re)start from the next start point, else from a kick of the best
            y = starts[order.pop(0)].copy() if order else best_x.copy()
        else:
            pick = rng.choice(free, size=min(free.size, int(rng.integers(lo_k, max(lo_k, hi_k) + 1))),
                              replace=False)
            y = x.copy()
            y[pick] = values[rng.integers(0, values.shape[0], pick.size), pick]
        y, c = climb(scorer, y, float(scorer.full(y[None])[0]), values, deadline)
        if stats is not None:
            stats["climbs"] = stats.get("climbs", 0) + 1
        if x is None or c >= m:  # equal margins too: drift along the plateaus rounding makes
            stale = 0 if x is None or c > m else stale + 1
            x, m = y, c
        else:
            stale += 1
        if m > best_m:
            best_x, best_m = x.copy(), m
        if m >= 0 and x.tobytes() not in rejected:
            found = check(x[None]) if check is not None else True
            if found is not None:
                return x, m, found
            rejected.add(x.tobytes())  # onnxruntime disagrees: keep looking elsewhere
        if stale >= RESTART_AFTER or free.size == 0:
            x = None
    return best_x, best_m, None
