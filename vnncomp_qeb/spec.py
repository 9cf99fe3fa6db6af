"""The property, independent of file format: a disjunction of (input box, output polytopes).

The VNN-LIB file describes the *unsafe* set. ``sat`` means some input ``x`` lies in a case's box
and the joint output ``y`` (all networks' outputs, concatenated) lies in one of that case's
polytopes ``A·y ≤ b`` (``<`` on rows marked strict).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Polytope:
    """Unsafe output region ``A·y ≤ b``; rows with ``strict`` use ``<``. No rows = every y."""

    A: np.ndarray
    b: np.ndarray
    strict: np.ndarray

    def slack(self, y: np.ndarray) -> np.ndarray:
        """``b − A·y`` per row for a batch ``y`` of shape (B, m): (B, k)."""
        return self.b[None, :] - y @ self.A.T

    def contains(self, y: np.ndarray) -> np.ndarray:
        """Which rows of the batch lie in the polytope: (B,) bool."""
        s = self.slack(y)
        ok = np.where(self.strict[None, :], s > 0, s >= 0)
        return ok.all(axis=1)

    def margin(self, y: np.ndarray) -> np.ndarray:
        """Smallest row slack (B,): ≥ 0 inside (> 0 needed on strict rows), +inf with no rows."""
        s = self.slack(y)
        return s.min(axis=1) if s.shape[1] else np.full(y.shape[0], np.inf)


@dataclass
class Case:
    """One input box with the output polytopes that are unsafe over it (a disjunction)."""

    lower: np.ndarray
    upper: np.ndarray
    polytopes: list[Polytope]

    def in_box(self, x: np.ndarray) -> np.ndarray:
        """(B,) bool: which flat inputs lie in the closed box (compared in float64)."""
        x = np.asarray(x, dtype=np.float64)
        return np.all((x >= self.lower) & (x <= self.upper), axis=1)

    def unsafe(self, y: np.ndarray) -> np.ndarray:
        """(B,) bool: which outputs lie in some polytope."""
        hit = np.zeros(y.shape[0], dtype=bool)
        for p in self.polytopes:
            hit |= p.contains(y)
        return hit

    def margin(self, y: np.ndarray) -> np.ndarray:
        """(B,) best polytope margin: how far inside the unsafe set the output is."""
        return np.max([p.margin(y) for p in self.polytopes], axis=0)


@dataclass
class Variable:
    """A declared variable: an input, output or hidden tensor of one network.

    ``index`` maps its flat elements to positions in the joint input vector (inputs) or the
    joint output vector (outputs and hidden tensors, which are observed like outputs).
    ``onnx_name`` names the ONNX tensor a hidden variable reads.
    """

    name: str
    network: str
    kind: str  # "input" | "output" | "hidden"
    shape: tuple[int, ...]
    dtype: str
    index: np.ndarray
    onnx_name: str = ""


@dataclass
class Spec:
    """A parsed property: cases over a joint input vector of ``n_inputs`` elements and a joint
    output vector of ``n_outputs`` elements, with the declared variables in order."""

    cases: list[Case]
    n_inputs: int
    n_outputs: int
    variables: list[Variable]
    version: str = "1.0"
    path: str = ""
    networks: list[str] = field(default_factory=list)
    # network → ("equal-to" | "isomorphic-to", the network it is declared relative to)
    relations: dict[str, tuple[str, str]] = field(default_factory=dict)
    # joint output positions that hold a copy of the joint input (constraints that are not
    # bounds of one input, e.g. a linear one over inputs, are read on this copy); None: no copy
    input_copy: np.ndarray | None = None
    # observations that are products of others (POLY): product k is observed at position
    # n_outputs − len(products) + k, the product of the observations it lists
    products: list[tuple[int, ...]] = field(default_factory=list)

    def inputs_of(self, network: str) -> list[Variable]:
        return [v for v in self.variables if v.kind == "input" and v.network == network]

    def outputs_of(self, network: str) -> list[Variable]:
        return [v for v in self.variables if v.kind == "output" and v.network == network]

    def hidden_of(self, network: str) -> list[Variable]:
        return [v for v in self.variables if v.kind == "hidden" and v.network == network]

    def input_index(self, network: str) -> np.ndarray:
        """Joint input positions of the network's flat input (its inputs in declaration order)."""
        return np.concatenate([v.index for v in self.inputs_of(network)] or [np.zeros(0, np.int64)])

    def observed_index(self, network: str) -> np.ndarray:
        """Joint output positions of what the network is observed at: its outputs, then its
        hidden tensors, in declaration order."""
        seen = self.outputs_of(network) + self.hidden_of(network)
        return np.concatenate([v.index for v in seen] or [np.zeros(0, np.int64)])

    def violated(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(B,) bool: which (x, y) pairs are counterexamples (x in a box, y unsafe there)."""
        hit = np.zeros(x.shape[0], dtype=bool)
        for case in self.cases:
            hit |= case.in_box(x) & case.unsafe(y)
        return hit
