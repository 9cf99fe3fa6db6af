"""Rewrites to the IR's normal form: fake-quant chains of standard ops become one FakeQuant.

``Mul(x, k) [→ Add(0.5) → Floor | → Round] [→ Clip(lo, hi)] → Div(k)`` (or the Mul written as
``Div(x, 1/k)`` and the Div as ``Mul(1/k)``) is ``FakeQuant(scale = 1/k, zero point 0,
[lo, hi], half_up | half_even)`` when lo and hi are integers: the same function, one rounding.
The analyses then relax one rounding band instead of three separate ops.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vnncomp_qeb import numerics
from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph


def _factor(op: ops.Op) -> np.ndarray | None:
    """The multiplier of a MulConst (x*c or x/c), as an array, or None."""
    if not isinstance(op, ops.MulConst) or isinstance(op, ops.CastFloat):  # a cast rounds: keep it
        return None
    c = np.asarray(op.c, dtype=np.float64)
    return 1.0 / c if op.divide else c


def _match(chain: list[ops.Op]) -> tuple[str, float, float, int] | None:
    """(mode, qmin, qmax, length) when ``chain`` starts with a fake-quant pattern."""
    if len(chain) < 3:
        return None
    k = _factor(chain[0])
    if k is None or np.any(k <= 0):
        return None
    i = 1
    if (isinstance(chain[i], ops.AddConst) and np.all(np.asarray(chain[i].c) == 0.5)
            and i + 1 < len(chain) and isinstance(chain[i + 1], ops.Round) and chain[i + 1].mode == "floor"):
        mode, i = "half_up", i + 2
    elif isinstance(chain[i], ops.Round) and chain[i].mode in ("half_even", "half_up", "half_away"):
        mode, i = chain[i].mode, i + 1
    else:
        return None
    lo, hi = -np.inf, np.inf
    if i < len(chain) and isinstance(chain[i], ops.Clip):
        lo, hi = chain[i].lo, chain[i].hi
        if (np.isfinite(lo) and lo != np.floor(lo)) or (np.isfinite(hi) and hi != np.floor(hi)):
            return None
        i += 1
    if i >= len(chain):
        return None
    back = _factor(chain[i])
    if back is None or np.shape(back) != np.shape(k) or not np.allclose(back * k, 1.0, rtol=0, atol=1e-15):
        return None
    return mode, float(lo), float(hi), i + 1


def fuse_fake_quant(graph: Graph) -> Graph:
    """Rewrite every fake-quant chain of single-reader elementwise ops into one FakeQuant."""
    readers = graph.consumers()
    out_ops: list[ops.Op] = []
    skip: set[int] = set()
    for op in graph.ops:
        if id(op) in skip:
            continue
        chain = [op]
        while len(chain) < 6:
            nxt = readers.get(chain[-1].output, [])
            if len(nxt) != 1 or chain[-1].output in graph.outputs or len(nxt[0].inputs) != 1:
                break
            chain.append(nxt[0])
        found = _match(chain)
        if found is None:
            out_ops.append(op)
            continue
        mode, lo, hi, n = found
        last = chain[n - 1]
        s = 1.0 / _factor(chain[0])
        out_ops.append(ops.FakeQuant(op.inputs, last.output, scale=s, zero_point=np.float64(0.0), qmin=lo,
                                     qmax=hi, mode=mode, source=" → ".join(o.source for o in chain[:n]),
                                     precision=ops.coarsest(*(o.precision for o in chain[:n]))))
        skip.update(id(o) for o in chain[1:n])
    return Graph(graph.input_name, graph.input_shape, out_ops, list(graph.outputs), name=graph.name)


def fold_scale_into_affine(graph: Graph) -> Graph:
    """``MulConst(c) → Affine(W, b)`` with a scalar c and one reader becomes ``Affine(c·W, b)``
    (one more rounding step in its error bound: the scaling)."""
    readers = graph.consumers()
    by_input: dict[str, ops.Op] = {}
    out_ops: list[ops.Op] = []
    for op in graph.ops:
        nxt = readers.get(op.output, [])
        c = _factor(op)
        if (c is not None and np.ndim(c) == 0 and len(nxt) == 1 and isinstance(nxt[0], ops.Affine)
                and op.output not in graph.outputs):
            by_input[op.output] = op
            continue
        if isinstance(op, ops.Affine) and op.inputs[0] in by_input:
            scale = by_input[op.inputs[0]]
            op = ops.Affine(scale.inputs, op.output, W=op.W * _factor(scale), b=op.b,
                            source=f"{scale.source} + {op.source}",
                            precision=ops.coarsest(scale.precision, op.precision), extra_steps=op.extra_steps + 1)
        out_ops.append(op)
    return Graph(graph.input_name, graph.input_shape, out_ops, list(graph.outputs), name=graph.name)


def _merge_into_producer(graph: Graph, merge) -> Graph:
    """Offer every op whose input's producer it alone reads (and that is no graph output) to
    ``merge(producer, op)``: an op computing both at once replaces them, None keeps them apart.
    A merged op can take the next one in (chains fold left to right)."""
    readers = graph.consumers()
    by_output = {op.output: op for op in graph.ops}
    out_ops: list[ops.Op] = []
    for op in graph.ops:
        prev = by_output.get(op.inputs[0]) if op.inputs else None
        if (prev is not None and prev in out_ops and len(readers.get(prev.output, [])) == 1
                and prev.output not in graph.outputs):
            new = merge(prev, op)
            if new is not None:
                out_ops[out_ops.index(prev)] = new
                by_output[op.output] = new
                continue
        out_ops.append(op)
    return Graph(graph.input_name, graph.input_shape, out_ops, list(graph.outputs), name=graph.name)


def merge_clamps(graph: Graph) -> Graph:
    """A clamp read only by another clamp (``Min(Max(x, a), b)``, ``Relu`` then ``Clip``) becomes
    one ``Clip``: the same function, and the layer keeps the one activation the analyses pair."""
    def merge(prev, op):
        if not (isinstance(op, (ops.Clip, ops.Relu)) and isinstance(prev, (ops.Clip, ops.Relu))):
            return None
        (lo1, hi1), (lo2, hi2) = _clamp(prev), _clamp(op)
        lo, hi = float(np.clip(lo1, lo2, hi2)), float(np.clip(hi1, lo2, hi2))  # clamp ∘ clamp
        return ops.Clip(prev.inputs, op.output, lo=lo, hi=hi, source=f"{prev.source} → {op.source}",
                        precision=ops.coarsest(prev.precision, op.precision))

    return _merge_into_producer(graph, merge)


def merge_relu_into_quant(graph: Graph) -> Graph:
    """``Relu(FakeQuant(x))`` (PyTorch's quantized exports dequantize before the Relu) is one
    FakeQuant whose range starts at the zero point: ``relu(s·(q − z)) = s·(max(q, z) − z)``
    exactly, and the layer keeps the one activation the analyses pair."""
    def merge(prev, op):
        if not (isinstance(op, ops.Relu) and isinstance(prev, ops.FakeQuant) and np.size(prev.zero_point) == 1
                and np.all(np.asarray(prev.scale) > 0)):
            return None
        z = float(np.asarray(prev.zero_point).reshape(-1)[0])
        if z != np.floor(z) or not prev.qmin <= z <= prev.qmax:
            return None
        return replace(prev, output=op.output, qmin=z, source=f"{prev.source} → {op.source}",
                       precision=ops.coarsest(prev.precision, op.precision))

    return _merge_into_producer(graph, merge)


def _clamp(op: ops.Op) -> tuple[float, float]:
    return (0.0, np.inf) if isinstance(op, ops.Relu) else (op.lo, op.hi)


def folded_shift(prev: ops.Affine, op: ops.Op, c: np.ndarray) -> dict:
    """Error terms of ``Affine(W, b)`` with a shift ``c`` folded in: onnxruntime rounds ``W·x + b``
    before adding ``c``, which may cancel ``b`` (so the fused bias ``b + c`` understates it)."""
    flat = lambda v: np.asarray(v, dtype=np.float64).reshape(-1) if np.ndim(v) else float(v)  # noqa: E731
    extra = flat(prev.slack_abs) + flat(op.slack_abs)
    if prev.b is not None:
        extra = extra + 2 * numerics.UNIT[ops.coarsest(prev.precision, op.precision)] * (np.abs(prev.b) + np.abs(c))
    return dict(slack=prev.slack, slack_abs=extra, extra_steps=prev.extra_steps + 1)


def fold_affine_outputs(graph: Graph) -> Graph:
    """``Affine(W, b) → MulConst(k) → AddConst(c)`` (a BatchNormalization after a Conv, per output
    element or scalar) becomes ``Affine(W·k, b·k + c)``, as onnxruntime's Conv+BN fusion computes
    it. Each fold adds a rounding step to the op's error bound (``extra_steps``)."""
    def merge(prev, op):
        if not isinstance(prev, ops.Affine):
            return None
        n = prev.W.shape[1]
        common = dict(source=f"{prev.source} + {op.source}", precision=ops.coarsest(prev.precision, op.precision))
        if type(op) is ops.MulConst and not op.divide and np.size(op.c) in (1, n) and not np.any(prev.slack_abs):
            k = np.broadcast_to(np.asarray(op.c, dtype=np.float64).reshape(-1), (n,))
            W = prev.W @ _diag(k) if prev.sparse else prev.W * k[None, :]
            return ops.Affine(prev.inputs, op.output, W=W, b=None if prev.b is None else prev.b * k,
                              slack=prev.slack + op.slack, extra_steps=prev.extra_steps + 1, **common)
        if type(op) is ops.AddConst and np.size(op.c) in (1, n):
            c = np.broadcast_to(np.asarray(op.c, dtype=np.float64).reshape(-1), (n,))
            return ops.Affine(prev.inputs, op.output, W=prev.W, b=c.copy() if prev.b is None else prev.b + c,
                              **folded_shift(prev, op, c), **common)
        return None

    return _merge_into_producer(graph, merge)


def _diag(k: np.ndarray):
    import scipy.sparse as sp

    return sp.diags_array(k)


def drop_requantization(graph: Graph) -> Graph:
    """A FakeQuant whose input is another FakeQuant with the same scale and zero point and a range
    inside its own (a QDQ pair around a reshape, as quantize_static writes for Flatten; a Relu
    merged into the first) is that input: the value already lies on the grid and in range, and
    rounding it again changes nothing."""
    by_output = {op.output: op for op in graph.ops}
    alias: dict[str, str] = {}
    out_ops: list[ops.Op] = []
    for op in graph.ops:
        op_inputs = tuple(alias.get(n, n) for n in op.inputs)
        prev = by_output.get(op_inputs[0]) if op_inputs else None
        if (isinstance(op, ops.FakeQuant) and isinstance(prev, ops.FakeQuant) and op.output not in graph.outputs
                and np.isfinite(prev.qmin) and np.isfinite(prev.qmax)
                and np.max(np.abs([prev.qmin, prev.qmax] - np.asarray(prev.zero_point).reshape(-1, 1))) < 2.0**21
                and np.array_equal(np.broadcast_to(op.scale, np.shape(prev.scale)), prev.scale)
                and np.array_equal(np.broadcast_to(op.zero_point, np.shape(prev.zero_point)), prev.zero_point)
                and op.qmin <= prev.qmin and prev.qmax <= op.qmax and op.mode in ("half_even", "half_up", "half_away")):
            alias[op.output] = prev.output
            continue
        if op_inputs != op.inputs:
            op = replace(op, inputs=op_inputs)
        out_ops.append(op)
    outputs = [alias.get(o, o) for o in graph.outputs]
    return Graph(graph.input_name, graph.input_shape, out_ops, outputs, name=graph.name)


def normalise(graph: Graph) -> Graph:
    """The form the analyses work on: clamps merged, fake-quant chains fused, scalings folded
    into weights (before and after: an input scaling, a BatchNormalization after a Conv)."""
    graph = merge_relu_into_quant(fuse_fake_quant(merge_clamps(graph)))
    return fold_affine_outputs(fold_scale_into_affine(drop_requantization(graph)))
