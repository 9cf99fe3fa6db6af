"""Twin detection: find ``N(x) − Q(x)`` in a difference model and pair the two branches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.dynamic_quant import DynamicQuant
from vnncomp_qeb.ir.graph import Graph

_QUANT_KINDS = (ops.FakeQuant, ops.Round, DynamicQuant)


@dataclass
class Twin:
    """One difference ``sub`` = N − Q (``sign`` +1) or Q − N (``sign`` −1).

    ``float_ops`` / ``quant_ops`` are the ops only that branch computes, in graph order;
    ``shared_ops`` feed both (e.g. input normalisation or snapping). ``pairs`` matches the
    branches' affine layers in order.
    """

    sub: ops.Sub
    float_output: str
    quant_output: str
    sign: int
    float_ops: list[ops.Op]
    quant_ops: list[ops.Op]
    shared_ops: list[ops.Op]
    pairs: list[tuple[ops.Affine, ops.Affine]]
    reason: str

    def describe(self) -> str:
        lines = [f"twin at {self.sub.output} = {'N − Q' if self.sign > 0 else 'Q − N'} "
                 f"(N: {self.float_output}, Q: {self.quant_output}; quantized branch: {self.reason})",
                 f"  shared ops: {len(self.shared_ops)}, N ops: {len(self.float_ops)}, Q ops: {len(self.quant_ops)}"]
        for i, (a, b) in enumerate(self.pairs):
            lines.append(f"  layer {i}: N {a.output} {a.describe()}  <->  Q {b.output} {b.describe()}")
        return "\n".join(lines)


def _fp16_exact(branch: list[ops.Op]) -> bool:
    mats = [op.weights() for op in branch if isinstance(op, ops.Affine)]
    mats += [op.b for op in branch if isinstance(op, ops.Affine) and op.b is not None]
    return bool(mats) and all(np.array_equal(m.astype(np.float16).astype(np.float64), m) for m in mats)


def _which_is_quantized(a_ops: list[ops.Op], b_ops: list[ops.Op]) -> tuple[int, str] | None:
    """0 if branch a is the quantized one, 1 if b; None if they cannot be told apart."""
    qa = sum(isinstance(op, _QUANT_KINDS) for op in a_ops)
    qb = sum(isinstance(op, _QUANT_KINDS) for op in b_ops)
    if qa != qb:
        return (0 if qa > qb else 1), f"{max(qa, qb)} rounding ops against {min(qa, qb)}"
    fa, fb = _fp16_exact(a_ops), _fp16_exact(b_ops)
    if fa != fb:
        return (0 if fa else 1), "float16-exact weights"
    return None


def find_twins(graph: Graph) -> list[Twin]:
    """Every ``Sub`` whose operands are computed by two branches that each hold affine layers."""
    twins = []
    for op in graph.ops:
        if not isinstance(op, ops.Sub):
            continue
        anc_a, anc_b = graph.ancestors(op.inputs[0]), graph.ancestors(op.inputs[1])
        shared = anc_a & anc_b
        a_ops = [o for o in graph.ops if o.output in anc_a - shared]
        b_ops = [o for o in graph.ops if o.output in anc_b - shared]
        aff_a = [o for o in a_ops if isinstance(o, ops.Affine)]
        aff_b = [o for o in b_ops if isinstance(o, ops.Affine)]
        if not aff_a or not aff_b:
            continue
        decided = _which_is_quantized(a_ops, b_ops)
        if decided is None:
            continue
        q, reason = decided
        f_ops, q_ops = (b_ops, a_ops) if q == 0 else (a_ops, b_ops)
        f_aff, q_aff = (aff_b, aff_a) if q == 0 else (aff_a, aff_b)
        pairs = [(fa, qa) for fa, qa in zip(f_aff, q_aff) if fa.W.shape == qa.W.shape]
        twins.append(Twin(
            sub=op,
            float_output=op.inputs[1] if q == 0 else op.inputs[0],
            quant_output=op.inputs[0] if q == 0 else op.inputs[1],
            sign=-1 if q == 0 else 1,
            float_ops=f_ops, quant_ops=q_ops,
            shared_ops=[o for o in graph.ops if o.output in shared],
            pairs=pairs, reason=reason))
    return twins
