"""Write error-bound properties as VNN-LIB 1.0 (difference model) or 2.0 (two networks)."""

from __future__ import annotations

import numpy as np


def _num(v: float) -> str:
    # no exponent: VNN-LIB 2.0 number tokens have none, and 1.0 readers differ on them
    return np.format_float_positional(float(v), unique=True, trim="0")


def error_bound_v1(lower, upper, eps: float, outputs: list[int], n_outputs: int) -> str:
    """Unsafe set of ``|Y_i| < eps`` for a difference model ``Y = N(X) − Q(X)``:
    ``(or (and (>= Y_i eps)) (and (<= Y_i -eps)) ...)`` over an input box. Official subset only."""
    lines = [f"; error bound: |N(x)_i - Q(x)_i| < {_num(eps)} for i in {outputs}", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(len(lower))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    lines.append("")
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        lines.append(f"(assert (>= X_{i} {_num(lo)}))")
        lines.append(f"(assert (<= X_{i} {_num(hi)}))")
    terms = []
    for j in outputs:
        terms.append(f"    (and (>= Y_{j} {_num(eps)}))")
        terms.append(f"    (and (<= Y_{j} {_num(-eps)}))")
    lines += ["", "(assert (or", *terms, "))", ""]
    return "\n".join(lines)


def error_bound_v2(lower, upper, eps: float, outputs: list[int], input_shape: list[int],
                   output_shape: list[int], float_name: str = "N", quant_name: str = "Q") -> str:
    """The same property over two networks, inputs tied with ``==`` (VNN-LIB 2.0)."""
    def idx(flat: int, shape: list[int]) -> str:
        return ",".join(str(int(i)) for i in np.unravel_index(flat, shape))

    ishape, oshape = ",".join(map(str, input_shape)), ",".join(map(str, output_shape))
    lines = [
        "(vnnlib-version <2.0>)",
        f"; error bound: |{float_name}(x)_i - {quant_name}(x)_i| < {_num(eps)} for i in {outputs}",
        f"(declare-network {float_name}",
        f"  (declare-input X float32 [{ishape}])",
        f"  (declare-output Y float32 [{oshape}]))",
        # a separate declaration: Q is another graph, neither equal-to N (the same network) nor
        # isomorphic-to it (the same graph at another element type) in the standard's sense
        f"(declare-network {quant_name}",
        f"  (declare-input XQ float32 [{ishape}])",
        f"  (declare-output YQ float32 [{oshape}]))",
    ]
    box = [f"(>= X[{idx(i, input_shape)}] {_num(lo)}) (<= X[{idx(i, input_shape)}] {_num(hi)})"
           for i, (lo, hi) in enumerate(zip(lower, upper))]
    lines.append("(assert (and " + "\n  ".join(box) + "))")
    ties = [f"(== X[{idx(i, input_shape)}] XQ[{idx(i, input_shape)}])" for i in range(len(lower))]
    lines.append("(assert (and " + " ".join(ties) + "))")
    viol = []
    for j in outputs:
        y, yq = f"Y[{idx(j, output_shape)}]", f"YQ[{idx(j, output_shape)}]"
        viol.append(f"(>= (- {y} {yq}) {_num(eps)})")
        viol.append(f"(<= (- {y} {yq}) {_num(-eps)})")
    lines.append("(assert (or " + "\n  ".join(viol) + "))")
    return "\n".join(lines) + "\n"
