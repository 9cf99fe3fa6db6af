"""Shared by the VNN-LIB readers: a DNF of linear atoms → input boxes with output polytopes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vnncomp_qeb.errors import SpecError
from vnncomp_qeb.spec import Case, Polytope

MAX_CLAUSES = 200_000


@dataclass
class LinAtom:
    """``Σ coeffs[v]·v + const ≤ 0`` (``< 0`` when strict); ``v = ("input"|"output", index)``."""

    coeffs: dict[tuple[str, int], float]
    const: float
    strict: bool
    line: int | None = None

    def negated_sides(self) -> "LinAtom":
        """``−expr ≤ 0``: the other half of an equality."""
        return LinAtom({k: -c for k, c in self.coeffs.items()}, -self.const, self.strict, self.line)


Clause = list[LinAtom]


def conjoin(dnfs: list[list[Clause]], path: str) -> list[Clause]:
    """The DNF of a conjunction of DNFs (top-level asserts are *and*-ed)."""
    result: list[Clause] = [[]]
    for dnf in dnfs:
        if len(result) * len(dnf) > MAX_CLAUSES:
            raise SpecError(f"the property expands to more than {MAX_CLAUSES} disjuncts; split it into "
                            "several instances", path=path)
        result = [a + b for a in result for b in dnf]
    return result


def clauses_to_cases(clauses: list[Clause], n_inputs: int, n_outputs: int, path: str,
                     input_label=lambda i: f"X_{i}") -> list[Case]:
    """Turn each clause into a box plus one output polytope; clauses with the same box share a
    case. Raises :class:`SpecError` for unbounded inputs and non-box input constraints."""
    by_box: dict[tuple, Case] = {}
    for clause in clauses:
        lower = np.full(n_inputs, -np.inf)
        upper = np.full(n_inputs, np.inf)
        rows, rhs, strict = [], [], []
        feasible = True
        for atom in clause:
            kinds = {k for k, _ in atom.coeffs}
            nonzero = {v: c for v, c in atom.coeffs.items() if c != 0.0}
            if not nonzero:
                if atom.const > 0 or (atom.strict and atom.const == 0):
                    feasible = False
                continue
            if kinds == {"input"}:
                if len(nonzero) != 1:
                    raise SpecError("input constraints must bound one input variable at a time "
                                    "(the input set must be a box)", path=path, line=atom.line)
                (_, i), a = next(iter(nonzero.items()))
                bound = -atom.const / a + 0.0  # + 0.0 turns -0.0 into 0.0
                if a > 0:
                    upper[i] = min(upper[i], bound)
                else:
                    lower[i] = max(lower[i], bound)
            elif kinds == {"output"}:
                row = np.zeros(n_outputs)
                for (_, j), c in nonzero.items():
                    row[j] += c
                rows.append(row)
                rhs.append(0.0 - atom.const)
                strict.append(atom.strict)
            else:
                raise SpecError("a constraint mixes input and output variables", path=path, line=atom.line)
        if not feasible:
            continue
        for i in range(n_inputs):
            if not np.isfinite(lower[i]) or not np.isfinite(upper[i]):
                side = "lower" if not np.isfinite(lower[i]) else "upper"
                raise SpecError(f"input {input_label(i)} has no {side} bound: the input set must be a box",
                                path=path)
        if np.any(lower > upper):
            continue  # empty box: this disjunct cannot be violated
        polytope = Polytope(np.array(rows).reshape(len(rows), n_outputs), np.array(rhs, dtype=np.float64),
                            np.array(strict, dtype=bool))
        key = (lower.tobytes(), upper.tobytes())
        if key not in by_box:
            by_box[key] = Case(lower, upper, [])
        by_box[key].polytopes.append(polytope)
    return list(by_box.values())
