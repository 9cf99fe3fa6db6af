"""Decide from output bounds which boxes cannot reach a case's unsafe polytopes."""

from __future__ import annotations

import numpy as np

from vnncomp_qeb.spec import Case, Polytope

_REL = 2.0**-50  # our own float64 error in the row sums


def polytope_excluded(p: Polytope, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(B,) bool: True where the output box [lo, hi] provably misses ``A·y ≤ b``."""
    if p.A.shape[0] == 0:
        return np.zeros(lo.shape[0], dtype=bool)
    Apos, Aneg = np.maximum(p.A, 0), np.minimum(p.A, 0)
    row_min = lo @ Apos.T + hi @ Aneg.T  # min of A·y over the box, per row: (B, k)
    err = (np.abs(lo) + np.abs(hi)) @ np.abs(p.A).T * _REL * (p.A.shape[1] + 1)
    # a row reading one output with coefficient ±1 is computed exactly
    nnz = (p.A != 0).sum(axis=1)
    exact = (nnz == 1) & (np.abs(p.A).max(axis=1) == 1.0)
    row_min = row_min - np.where(exact[None, :], 0.0, err)
    miss = np.where(p.strict[None, :], row_min >= p.b[None, :], row_min > p.b[None, :])
    return miss.any(axis=1)


def case_excluded(case: Case, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(B,) bool: True where no unsafe polytope of ``case`` is reachable."""
    out = np.ones(lo.shape[0], dtype=bool)
    for p in case.polytopes:
        out &= polytope_excluded(p, lo, hi)
    return out
