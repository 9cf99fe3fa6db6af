"""Batched sampling for counterexamples, scored by the reference evaluator."""

from __future__ import annotations

import numpy as np

from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.spec import Case


def box_points(lower: np.ndarray, upper: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points in the box: the centre, random corners, then uniform samples."""
    d = lower.size
    n_corners = min(n // 4, 2**d)
    corners = np.where(rng.random((n_corners, d)) < 0.5, lower, upper)
    uniform = lower + (upper - lower) * rng.random((max(n - n_corners - 1, 0), d))
    return np.vstack([(lower + upper)[None] / 2, corners, uniform])


def best_candidates(graph: Graph, case: Case, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` points whose outputs go deepest into the case's unsafe set, with margins
    (reference float64 semantics; onnxruntime has the last word)."""
    y = graph.evaluate(points)
    margin = case.margin(y)
    order = np.argsort(-margin)[:k]
    return points[order], margin[order]
