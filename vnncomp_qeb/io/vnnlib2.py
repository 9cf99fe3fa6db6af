"""VNN-LIB 2.0 reader on top of the reference parser (PyPI ``vnnlib``), into a :class:`Spec`.

Several networks may be declared. Inputs tied by ``==`` (e.g. ``(== X[0,i] XQ[0,i])``) share one
position of the joint input vector; outputs of all networks are concatenated in declaration order.
"""

from __future__ import annotations

import json
import re

import numpy as np
import vnnlib

from vnncomp_qeb.errors import SpecError
from vnncomp_qeb.io.spec_builder import Clause, LinAtom, clauses_to_cases, conjoin
from vnncomp_qeb.spec import Spec, Variable

_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16"}
_OPS = {vnnlib.LessEqual: ("<=", False), vnnlib.LessThan: ("<=", True),
        vnnlib.GreaterEqual: (">=", False), vnnlib.GreaterThan: (">=", True),
        vnnlib.Equal: ("==", False), vnnlib.NotEqual: ("!=", False)}


def _parse(text: str, path: str):
    try:
        return vnnlib.parse_query_string(text)
    except vnnlib.VNNLibException as exc:
        line, msg = None, str(exc)
        try:
            first = json.loads(str(exc))["errors"][0]
            line = first.get("line")
            sym = f" '{first['offendingSymbol']}'" if first.get("offendingSymbol") else ""
            msg = f"{first.get('message', 'error')}{sym}" + (f" ({first['hint']})" if first.get("hint") else "")
        except (ValueError, KeyError, IndexError, TypeError):
            pass
        raise SpecError(msg, path=path, line=line) from None


class _Layout:
    """Flat element numbering of every declared input/output/hidden element."""

    def __init__(self, query, path: str, declared_types: dict[str, str] | None = None):
        self.path = path
        self.decls = []  # (name, network, kind, shape, dtype, first flat element id, onnx name)
        self.start: dict[str, int] = {}
        total = 0
        for net in query.networks:
            for kind, defs in (("input", net.inputs), ("output", net.outputs), ("hidden", net.hidden)):
                for d in defs:
                    shape = tuple(int(s) for s in d.shape)
                    dtype = _DTYPES.get(str(d.dtype).split(".")[-1], str(d.dtype).split(".")[-1].lower())
                    dtype = (declared_types or {}).get(d.name, dtype)
                    onnx_name = str(getattr(d, "onnx_name", "") or "").strip('"') if kind == "hidden" else ""
                    self.decls.append((d.name, net.name, kind, shape, dtype, total, onnx_name))
                    self.start[d.name] = total
                    total += int(np.prod(shape, dtype=np.int64)) if shape else 1
        self.kind = {name: kind for name, _, kind, *_ in self.decls}
        self.shape = {name: shape for name, _, _, shape, *_ in self.decls}
        self.total = total
        self.products: dict[tuple[int, ...], int] = {}  # monomial of degree ≥ 2 → its pseudo element

    def product(self, monomial: tuple[int, ...]) -> int:
        """A pseudo element standing for a product of elements (read as an observation)."""
        if monomial not in self.products:
            self.products[monomial] = self.total + len(self.products)
        return self.products[monomial]

    def element(self, var) -> int:
        shape = self.shape[var.name]
        idx = tuple(int(i) for i in var.indices)
        if not shape:
            return self.start[var.name]
        if len(idx) != len(shape) or any(i < 0 or i >= s for i, s in zip(idx, shape)):
            raise SpecError(f"index {list(idx)} out of range for {var.name} of shape {list(shape)}",
                            path=self.path, line=var.line)
        return self.start[var.name] + int(np.ravel_multi_index(idx, shape))


def _comparisons(query, layout: _Layout, path: str) -> list[list[list[tuple]]]:
    """Per assertion, its DNF as lists of (coeffs by element id, const, op, strict, line)."""
    out = []
    for assertion in query.assertions:
        dnf = []
        for conj in assertion.expr.to_dnf():
            clause = []
            for cmp in conj:
                op, strict = _OPS[type(cmp)]
                coeffs: dict[int, float] = {}
                const = 0.0
                line = None
                for side, sign in ((cmp.lhs, 1.0), (cmp.rhs, -1.0)):
                    for monomial, c in _polynomial(side, layout).items():
                        if not monomial:
                            const += sign * c
                            continue
                        e = monomial[0] if len(monomial) == 1 else layout.product(monomial)
                        coeffs[e] = coeffs.get(e, 0.0) + sign * c
                    line = line or getattr(side, "line", None)
                if op == "!=":
                    raise SpecError("'!=' is not supported in properties", path=path, line=line)
                clause.append((coeffs, const, op, strict, line))
            dnf.append(clause)
        out.append(dnf)
    return out


def _polynomial(expr, layout: "_Layout") -> dict[tuple[int, ...], float]:
    """The expression as a polynomial: monomial (sorted element ids; () for the constant) →
    coefficient."""
    kind = type(expr).__name__
    if kind == "Var":
        return {(layout.element(expr),): 1.0}
    if kind in ("Float", "Int", "Literal"):
        return {(): float(expr.value)}
    if kind == "Negate":
        return {m: -c for m, c in _polynomial(expr.expr, layout).items()}
    if kind == "Plus":
        out: dict = {}
        for a in expr.args:
            for m, c in _polynomial(a, layout).items():
                out[m] = out.get(m, 0.0) + c
        return out
    if kind == "Minus":
        out = dict(_polynomial(expr.head, layout))
        for a in expr.rest:
            for m, c in _polynomial(a, layout).items():
                out[m] = out.get(m, 0.0) - c
        return out
    if kind == "Multiply":
        out = {(): 1.0}
        for a in expr.args:
            nxt: dict = {}
            for m1, c1 in out.items():
                for m2, c2 in _polynomial(a, layout).items():
                    m = tuple(sorted(m1 + m2))
                    nxt[m] = nxt.get(m, 0.0) + c1 * c2
            out = nxt
        return out
    lin = expr.to_linear_expr()  # anything else the reference parser linearises itself
    out = {(): float(lin.constant)}
    for t in lin.terms:
        key = (layout.element(t.var),)
        out[key] = out.get(key, 0.0) + t.coeff
    return out


def _ties(clause, layout: _Layout) -> frozenset:
    """Input equalities ``a == b`` between two input elements in a clause."""
    ties = set()
    for coeffs, const, op, _, _ in clause:
        nz = {e: c for e, c in coeffs.items() if c != 0}
        if (op == "==" and const == 0 and len(nz) == 2 and sorted(nz.values()) == [-1.0, 1.0]
                and all(layout_kind(layout, e) == "input" for e in nz)):
            ties.add(tuple(sorted(nz)))
    return frozenset(ties)


def layout_kind(layout: _Layout, element: int) -> str:
    if element >= layout.total:
        return "product"
    for name, _, kind, shape, _, start, _ in layout.decls:
        if start <= element < start + (int(np.prod(shape, dtype=np.int64)) if shape else 1):
            return kind
    raise KeyError(element)


def read_vnnlib2(text: str, path: str = "<string>") -> Spec:
    """Parse VNN-LIB 2.0 text; raises :class:`SpecError` naming the line of a problem."""
    query, declared = _parse_query(text, path)
    layout = _Layout(query, path, declared)
    clauses = conjoin(_comparisons(query, layout, path), path)
    tie_sets = {_ties(c, layout) for c in clauses}
    if len(tie_sets) > 1:
        raise SpecError("input ties (==) must hold in every disjunct", path=path)
    ties = next(iter(tie_sets)) if tie_sets else frozenset()

    # union-find over input elements: each class is one position of the joint input vector
    parent: dict[int, int] = {}

    def find(e: int) -> int:
        while parent.get(e, e) != e:
            e = parent[e]
        return e

    for a, b in sorted(ties):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    input_pos: dict[int, int] = {}
    output_pos: dict[int, int] = {}
    # joint output positions: per network (in declaration order) its outputs, then its hidden
    # tensors — the order in which the joint graph observes them
    by_net: dict[str, list] = {}
    for decl in layout.decls:
        by_net.setdefault(decl[1], []).append(decl)
    ordered = [d for net in by_net.values() for kind in ("input", "output", "hidden") for d in net if d[2] == kind]
    variables = []
    for name, net, kind, shape, dtype, start, onnx_name in ordered:
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        pos = input_pos if kind == "input" else output_pos
        index = []
        for e in range(start, start + n):
            root = find(e) if kind == "input" else e
            if root not in pos:
                pos[root] = len(pos)
            index.append(pos[root])
        variables.append(Variable(name, net, kind, shape, dtype, np.array(index, dtype=np.int64), onnx_name))
    n_observed = len(output_pos)

    def is_tie(op, const, nz) -> bool:
        return op == "==" and len(nz) == 2 and const == 0 and all(layout_kind(layout, e) == "input" for e in nz)

    def reads_inputs_jointly(nz) -> bool:  # not a bound on one input: read on the input's copy
        kinds = {layout_kind(layout, e) for e in nz}
        return "input" in kinds and (len(nz) > 1 or kinds != {"input"})

    copy = any(reads_inputs_jointly({e: c for e, c in coeffs.items() if c != 0})
               for clause in clauses for coeffs, const, op, _, _ in clause
               if not is_tie(op, const, {e: c for e, c in coeffs.items() if c != 0}))
    copy = copy or any(layout_kind(layout, e) == "input" for m in layout.products for e in m)
    first_product = n_observed + (len(input_pos) if copy else 0)

    def observed(e: int) -> int:  # where a factor of a product is observed
        kind = layout_kind(layout, e)
        return n_observed + input_pos[find(e)] if kind == "input" else output_pos[e]

    products = [tuple(observed(e) for e in m) for m in layout.products]

    atoms_per_clause: list[Clause] = []
    for clause in clauses:
        atoms = []
        for coeffs, const, op, strict, line in clause:
            nz = {e: c for e, c in coeffs.items() if c != 0}
            if is_tie(op, const, nz):
                continue  # a tie, already folded into the layout
            jointly = reads_inputs_jointly(nz)
            lin: dict[tuple[str, int], float] = {}
            for e, c in nz.items():
                if layout_kind(layout, e) == "product":
                    key = ("output", first_product + e - layout.total)
                elif layout_kind(layout, e) == "input":
                    key = ("output", n_observed + input_pos[find(e)]) if jointly else ("input", input_pos[find(e)])
                else:
                    key = ("output", output_pos[e])
                lin[key] = lin.get(key, 0.0) + c
            sign = -1.0 if op == ">=" else 1.0
            atom = LinAtom({k: sign * c for k, c in lin.items()}, sign * const, strict, line)
            atoms.extend([atom, atom.negated_sides()] if op == "==" else [atom])
        atoms_per_clause.append(atoms)
    names = {v: k for k, v in input_pos.items()}
    label = lambda i: _element_name(layout, names[i])  # noqa: E731
    n_outputs = first_product + len(products)
    cases = clauses_to_cases(atoms_per_clause, len(input_pos), n_outputs, path, input_label=label)
    networks = list(dict.fromkeys(net.name for net in query.networks))
    relations = {}
    for net in query.networks:
        if str(net.equal_to):
            relations[net.name] = ("equal-to", str(net.equal_to))
        elif str(getattr(net, "isometric_to", "")):
            relations[net.name] = ("isomorphic-to", str(net.isometric_to))
    return Spec(cases, len(input_pos), n_outputs, variables, version="2.0", path=path, networks=networks,
                relations=relations, input_copy=np.arange(n_observed, first_product) if copy else None,
                products=products)


_NETWORK = re.compile(r"\(declare-network\s+([A-Za-z_][\w]*)\s*\(\s*isomorphic-to\s+([A-Za-z_][\w]*)\s*\)")
_DECL = re.compile(r"\(declare-(input|output|hidden)\s+(\S+)\s+(\S+)")


def _parse_query(text: str, path: str):
    """The reference parser's query, and the element types declared for the variables of an
    ``isomorphic-to`` network where they differ from its target's (the same graph at another
    precision: vnnlib 1.0.2 rejects the difference, which the standard allows)."""
    try:
        return _parse(text, path), {}
    except SpecError as exc:
        if "isomorphic-to" not in text or "Type mismatch" not in str(exc):
            raise
        first = exc  # the name bound by ``except`` does not outlive its block
    blocks = _network_blocks(text)
    declared, rewritten = {}, text
    for m in _NETWORK.finditer(text):
        name, target = m.group(1), m.group(2)
        if target not in blocks:
            continue
        own, theirs = _DECL.findall(blocks[name][2]), _DECL.findall(blocks[target][2])
        if len(own) != len(theirs):
            raise first
        body = blocks[name][2]
        for (kind, var, dtype), (_, _, target_type) in zip(own, theirs):
            declared[var] = _DTYPES.get(dtype.upper(), dtype.lower())
            body = re.sub(rf"\(declare-{kind}\s+{re.escape(var)}\s+{re.escape(dtype)}",
                          f"(declare-{kind} {var} {target_type}", body, count=1)
        a, b, _ = blocks[name]
        rewritten = rewritten[:a] + body + rewritten[b:]
        blocks = _network_blocks(rewritten)
    return _parse(rewritten, path), declared


def _network_blocks(text: str) -> dict[str, tuple[int, int, str]]:
    """Each ``(declare-network NAME ...)`` form: its start, end and text."""
    out = {}
    for m in re.finditer(r"\(declare-network\s+([A-Za-z_][\w]*)", text):
        depth, i = 0, m.start()
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        out[m.group(1)] = (m.start(), i, text[m.start():i])
    return out


def _element_name(layout: _Layout, element: int) -> str:
    for name, _, _, shape, _, start, _ in layout.decls:
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if start <= element < start + n:
            idx = np.unravel_index(element - start, shape) if shape else ()
            return f"{name}[{','.join(str(int(i)) for i in idx)}]"
    return str(element)
