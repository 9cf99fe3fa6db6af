"""A solver-neutral mixed-integer linear program, built with numpy (rows in CSR form).

Every back-end in :mod:`vnncomp_qeb.milp.backends` reads this one structure, so the encoding is
written once. The objective is always *maximised*.
"""

from __future__ import annotations

import numpy as np


class MilpModel:
    """Columns with bounds and integrality, ranged rows ``lo ≤ a·x ≤ hi``, a linear objective."""

    def __init__(self):
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._int: list[np.ndarray] = []
        self.n_vars = 0
        self._starts: list[np.ndarray] = []
        self._index: list[np.ndarray] = []
        self._value: list[np.ndarray] = []
        self._rlo: list[np.ndarray] = []
        self._rhi: list[np.ndarray] = []
        self.n_rows = 0
        self._nnz = 0
        self.objective = np.zeros(0)
        self.offset = 0.0

    def add_vars(self, lb, ub, integer: bool = False) -> np.ndarray:
        """New columns (one per element of ``lb``); returns their indices, shaped like ``lb``."""
        lb = np.asarray(lb, dtype=np.float64)
        ub = np.broadcast_to(np.asarray(ub, dtype=np.float64), lb.shape)
        if np.any(lb > ub):
            raise ValueError("empty variable range")
        idx = np.arange(self.n_vars, self.n_vars + lb.size).reshape(lb.shape)
        self.n_vars += lb.size
        self._lb.append(lb.ravel())
        self._ub.append(ub.ravel().copy())
        self._int.append(np.full(lb.size, integer))
        return idx

    def add_rows(self, cols: np.ndarray, vals: np.ndarray, lo, hi) -> None:
        """Rows ``lo[r] ≤ Σ_k vals[r, k]·x[cols[r, k]] ≤ hi[r]``; zero coefficients and columns
        < 0 are dropped, so rows of different lengths share one padded array."""
        cols = np.atleast_2d(np.asarray(cols, dtype=np.int64))
        vals = np.broadcast_to(np.asarray(vals, dtype=np.float64), cols.shape)
        R = cols.shape[0]
        if R == 0:
            return
        # a column named twice in a row (a ReLU that is the identity on the box shares its
        # input's column) gets the sum of its coefficients: solvers reject duplicate entries
        order = np.argsort(np.where(cols >= 0, cols, -1), axis=1, kind="stable")
        cols, vals = np.take_along_axis(cols, order, 1), np.take_along_axis(vals, order, 1)
        repeat = np.zeros(cols.shape, dtype=bool)
        repeat[:, 1:] = (cols[:, 1:] == cols[:, :-1]) & (cols[:, 1:] >= 0)
        if repeat.any():
            first = np.maximum.accumulate(np.where(~repeat, np.arange(cols.shape[1]), 0), axis=1)
            summed = np.zeros(vals.shape)
            np.add.at(summed, (np.repeat(np.arange(R), cols.shape[1]), first.ravel()), vals.ravel())
            vals = np.where(repeat, 0.0, summed)
        keep = (vals != 0) & (cols >= 0)
        counts = keep.sum(axis=1)
        self._starts.append(self._nnz + np.concatenate([[0], np.cumsum(counts)[:-1]]))
        self._index.append(cols[keep])
        self._value.append(vals[keep])
        self._rlo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (R,)).copy())
        self._rhi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (R,)).copy())
        self.n_rows += R
        self._nnz += int(counts.sum())

    def copy(self) -> "MilpModel":
        """An independent copy (the encoding is shared by several objectives)."""
        other = MilpModel.__new__(MilpModel)
        other.__dict__ = {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}
        return other

    def restricted(self, cols: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> "MilpModel":
        """A copy whose columns ``cols`` have the bounds ``[lo, hi]`` (a neighbourhood of a point)."""
        other = self.copy()
        lb, ub = self.bounds()
        lb[cols], ub[cols] = lo, hi
        other._lb, other._ub = [lb], [ub]
        return other

    def relaxation(self) -> "MilpModel":
        """A copy with every column continuous (the LP relaxation)."""
        other = self.copy()
        other._int = [np.zeros_like(v) for v in self._int]
        return other

    def set_objective(self, idx: np.ndarray, coef: np.ndarray, offset: float = 0.0) -> None:
        """Maximise ``offset + Σ coef·x[idx]``."""
        self.objective = np.zeros(self.n_vars)
        np.add.at(self.objective, np.asarray(idx).ravel(), np.asarray(coef, dtype=np.float64).ravel())
        self.offset = float(offset)

    # -- read back by the back-ends ----------------------------------------------------------
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return _cat(self._lb), _cat(self._ub)

    def integrality(self) -> np.ndarray:
        return _cat(self._int).astype(bool)

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(starts, index, value, lower, upper) in CSR form."""
        return (_cat(self._starts).astype(np.int64), _cat(self._index).astype(np.int64), _cat(self._value),
                _cat(self._rlo), _cat(self._rhi))

    def iter_rows(self):
        """``(columns, coefficients, lower, upper)`` per row, as Python lists (for solver APIs
        that take one constraint at a time)."""
        starts, index, value, lo, hi = self.rows()
        ends = np.append(starts[1:], index.size)
        for r in range(self.n_rows):
            sl = slice(starts[r], ends[r])
            yield index[sl].tolist(), value[sl].tolist(), float(lo[r]), float(hi[r])

    def cost(self) -> np.ndarray:
        c = np.zeros(self.n_vars)
        c[: self.objective.size] = self.objective
        return c

    def row_values(self, x: np.ndarray) -> np.ndarray:
        """``a·x`` of every row (to check a point against the model)."""
        starts, index, value, _, _ = self.rows()
        counts = np.diff(np.append(starts, index.size))
        return np.bincount(np.repeat(np.arange(self.n_rows), counts), weights=value * x[index],
                           minlength=self.n_rows)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)
