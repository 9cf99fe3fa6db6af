"""VNN-LIB 1.0 reader: the VNN-COMP subset plus linear terms, into a :class:`Spec`."""

from __future__ import annotations

import re

import numpy as np

from vnncomp_qeb.errors import SpecError
from vnncomp_qeb.io.sexpr import Atom, SList, parse_sexprs
from vnncomp_qeb.io.spec_builder import Clause, LinAtom, clauses_to_cases, conjoin
from vnncomp_qeb.spec import Spec, Variable

_VAR = re.compile(r"^([XY])_(\d+)$")
_IGNORED = {"set-logic", "check-sat", "get-model", "exit", "set-info", "set-option"}


class _Reader:
    def __init__(self, path: str):
        self.path = path
        self.declared: dict[str, tuple[str, int]] = {}

    def fail(self, msg: str, node) -> SpecError:
        return SpecError(msg, path=self.path, line=getattr(node, "line", None))

    # -- terms -------------------------------------------------------------------------------
    def term(self, node) -> tuple[dict, float]:
        """A linear term as (coefficients by variable, constant)."""
        if isinstance(node, Atom):
            if node in self.declared:
                return {self.declared[node]: 1.0}, 0.0
            try:
                value = float(node)
            except ValueError:
                value = None
            if value is not None:
                if not np.isfinite(value):
                    raise self.fail(f"the number '{node}' is not finite (NaN or infinity bounds nothing)", node)
                return {}, value
            else:
                if _VAR.match(node):
                    raise self.fail(f"variable '{node}' is used but not declared", node) from None
                raise self.fail(f"unknown symbol '{node}'", node) from None
        if not node or not isinstance(node[0], Atom):
            raise self.fail("expected a term", node)
        head, args = node[0], [self.term(a) for a in node[1:]]
        if not args:
            raise self.fail(f"'{head}' needs arguments", node)
        if head == "+":
            return _sum(args, [1.0] * len(args))
        if head == "-":
            if len(args) == 1:
                return _sum(args, [-1.0])
            return _sum(args, [1.0] + [-1.0] * (len(args) - 1))
        if head == "*":  # at most one factor may hold variables: (c·v + k)·m = (c·m)·v + k·m
            coeffs, const = {}, 1.0
            for c, k in args:
                if c and coeffs:
                    raise self.fail("product of two variables is not linear", node)
                coeffs = {v: a * const for v, a in c.items()} if c else {v: a * k for v, a in coeffs.items()}
                const *= k
            return coeffs, const
        raise self.fail(f"unknown operator '{head}' in a term", node)

    # -- formulas ----------------------------------------------------------------------------
    def formula(self, node) -> list[Clause]:
        """DNF of a formula: a list of clauses, each a list of atoms."""
        if not isinstance(node, SList) or not node or not isinstance(node[0], Atom):
            raise self.fail("expected a formula such as (<= X_0 1.0)", node)
        head = node[0]
        if head == "and":
            return conjoin([self.formula(a) for a in node[1:]], self.path)
        if head == "or":
            return [c for a in node[1:] for c in self.formula(a)]
        if head in ("<=", ">=", "<", ">", "="):
            if len(node) != 3:
                raise self.fail(f"'{head}' takes two arguments", node)
            (ca, ka), (cb, kb) = self.term(node[1]), self.term(node[2])
            left, right = (ca, ka), (cb, kb)
            if head in (">=", ">"):
                left, right = right, left
            coeffs, const = _sum([left, right], [1.0, -1.0])
            atom = LinAtom(coeffs, const, head in ("<", ">"), head.line)
            return [[atom, atom.negated_sides()]] if head == "=" else [[atom]]
        raise self.fail(f"unknown operator '{head}'", node)

    # -- file --------------------------------------------------------------------------------
    def read(self, text: str) -> Spec:
        clauses_per_assert = []
        for cmd in parse_sexprs(text, self.path):
            if not cmd or not isinstance(cmd[0], Atom):
                raise self.fail("expected a command such as (declare-const X_0 Real)", cmd)
            head = cmd[0]
            if head == "declare-const":
                self.declare(cmd)
            elif head == "assert":
                if len(cmd) != 2:
                    raise self.fail("assert takes one formula", cmd)
                clauses_per_assert.append(self.formula(cmd[1]))
            elif head in _IGNORED:
                continue
            else:
                raise self.fail(f"unknown command '{head}'", cmd)
        n_in = self.count("input")
        n_out = self.count("output")
        clauses = conjoin(clauses_per_assert, self.path)
        cases = clauses_to_cases(clauses, n_in, n_out, self.path)
        variables = [
            Variable("X", "N", "input", (n_in,), "float32", np.arange(n_in)),
            Variable("Y", "N", "output", (n_out,), "float32", np.arange(n_out)),
        ]
        return Spec(cases, n_in, n_out, variables, version="1.0", path=self.path, networks=["N"])

    def declare(self, cmd: SList) -> None:
        if len(cmd) != 3 or not isinstance(cmd[1], Atom):
            raise self.fail("expected (declare-const NAME Real)", cmd)
        if cmd[2] != "Real":
            raise self.fail(f"variable '{cmd[1]}' is declared {cmd[2]}: only Real variables are supported "
                            "(an integer-valued input is a real one snapped by the model, e.g. by a QuantizeLinear)",
                            cmd)
        m = _VAR.match(cmd[1])
        if not m:
            raise self.fail(f"variable '{cmd[1]}' must be named X_i (input) or Y_j (output)", cmd)
        if cmd[1] in self.declared:
            raise self.fail(f"variable '{cmd[1]}' is declared twice", cmd)
        self.declared[cmd[1]] = ("input" if m.group(1) == "X" else "output", int(m.group(2)))

    def count(self, kind: str) -> int:
        idx = sorted(i for k, i in self.declared.values() if k == kind)
        if idx != list(range(len(idx))):
            missing = sorted(set(range(max(idx) + 1)) - set(idx))[0]
            name = "X" if kind == "input" else "Y"
            raise SpecError(f"{name}_{missing} is not declared but {name}_{max(idx)} is", path=self.path)
        return len(idx)


def _sum(terms: list[tuple[dict, float]], weights: list[float]) -> tuple[dict, float]:
    coeffs: dict = {}
    const = 0.0
    for (c, k), w in zip(terms, weights):
        for v, a in c.items():
            coeffs[v] = coeffs.get(v, 0.0) + w * a
        const += w * k
    return coeffs, const


def read_vnnlib1(text: str, path: str = "<string>") -> Spec:
    """Parse VNN-LIB 1.0 text; raises :class:`SpecError` naming the line of a problem."""
    return _Reader(path).read(text)
