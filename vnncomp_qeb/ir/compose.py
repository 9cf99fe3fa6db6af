"""Join several networks into one graph over a joint input vector (VNN-LIB 2.0 queries)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vnncomp_qeb.ir import ops
from vnncomp_qeb.ir.graph import Graph


def compose(parts: list[tuple[str, Graph, np.ndarray]], n_inputs: int, input_name: str = "x",
            observe_input: bool = False, products: list[tuple[int, ...]] = ()) -> Graph:
    """One graph whose input is the flat joint vector (``n_inputs``) and whose output vector is
    the concatenation of the parts' outputs (then, with ``observe_input``, a copy of the joint
    input). Each part is (prefix, graph, index) where ``index`` picks the part's flat input from
    the joint vector."""
    all_ops: list[ops.Op] = []
    outputs: list[str] = []
    for prefix, g, index in parts:
        rename = {g.input_name: f"{prefix}/{g.input_name}"}
        all_ops.append(ops.Gather((input_name,), rename[g.input_name], indices=np.asarray(index),
                                  shape=tuple(g.input_shape), source=f"input of {prefix}"))
        for op in g.ops:
            rename[op.output] = f"{prefix}/{op.output}"
            all_ops.append(replace(op, inputs=tuple(rename[n] for n in op.inputs), output=rename[op.output]))
        outputs.extend(rename[o] for o in g.outputs)
    if observe_input:
        all_ops.append(ops.Gather((input_name,), "x/observed", indices=np.arange(n_inputs), shape=(n_inputs,),
                                  source="input read by the property", precision="float64"))
        outputs.append("x/observed")
    if products:
        all_ops += _products(all_ops, outputs, products, input_name, n_inputs)
        outputs.append("x/products")
    return Graph(input_name, (n_inputs,), all_ops, outputs, name="+".join(p for p, _, _ in parts))


def _products(all_ops: list[ops.Op], outputs: list[str], products: list[tuple[int, ...]], input_name: str,
              n_inputs: int) -> list[ops.Op]:
    """Ops computing the products of observations a polynomial property reads (in float64, as
    the property is evaluated), as one tensor ``x/products``."""
    from vnncomp_qeb.ir.nonlinear import Product

    shapes = Graph(input_name, (n_inputs,), list(all_ops), list(outputs)).shapes
    new: list[ops.Op] = []
    flats = []
    for k, o in enumerate(outputs):
        size = int(np.prod(shapes[o], dtype=np.int64))
        new.append(ops.Reshape((o,), f"x/obs{k}", shape=(size,), precision="float64"))
        flats.append(new[-1].output)
    new.append(ops.Concat(tuple(flats), "x/observations", axis=1, precision="float64"))
    terms = []
    for k, factors in enumerate(products):
        cur = None
        for j, f in enumerate(factors):
            pick = ops.Gather(("x/observations",), f"x/p{k}f{j}", indices=np.array([f]), shape=(1,), precision="float64")
            new.append(pick)
            if cur is None:
                cur = pick.output
                continue
            new.append(Product((cur, pick.output), f"x/p{k}m{j}", precision="float64"))
            cur = new[-1].output
        terms.append(cur)
    new.append(ops.Concat(tuple(terms), "x/products", axis=1, precision="float64"))
    return new


def twin_graph(n: Graph, q: Graph, index: np.ndarray, n_inputs: int, input_name: str = "x") -> Graph:
    """The difference graph ``N(x) − Q(x)`` of two networks reading the same elements ``index``
    of the joint input: both branches read one shared tensor, so twin detection pairs them. The
    subtraction is exact (float64): the property compares the two files' outputs as numbers."""
    all_ops: list[ops.Op] = []
    source = input_name
    if not (index.size == n_inputs and np.array_equal(index, np.arange(n_inputs))):
        source = "x/input"
        all_ops.append(ops.Gather((input_name,), source, indices=np.asarray(index), shape=(index.size,),
                                  source="tied input"))
    outs = []
    shaped: dict[tuple, str] = {(index.size,): source}  # one tensor per input shape, shared
    for prefix, g in (("N", n), ("Q", q)):
        shape = tuple(g.input_shape)
        if shape not in shaped:
            shaped[shape] = f"x/{'x'.join(map(str, shape))}"
            all_ops.append(ops.Reshape((source,), shaped[shape], shape=shape, source="input shape",
                                       precision="float64"))
        rename = {g.input_name: shaped[shape]}
        for op in g.ops:
            rename[op.output] = f"{prefix}/{op.output}"
            all_ops.append(replace(op, inputs=tuple(rename[i] for i in op.inputs), output=rename[op.output]))
        flat = [rename[o] for o in g.outputs]
        if len(flat) != 1 or tuple(g.shapes[g.outputs[0]]) != (g.output_size,):
            reshaped = []
            for o, name in zip(g.outputs, flat):
                r = ops.Reshape((name,), name + "/flat", shape=(int(np.prod(g.shapes[o], dtype=np.int64)),),
                                precision="float64")
                all_ops.append(r)
                reshaped.append(r.output)
            if len(reshaped) > 1:
                all_ops.append(ops.Concat(tuple(reshaped), f"{prefix}/outputs", axis=1, precision="float64"))
                flat = [f"{prefix}/outputs"]
            else:
                flat = reshaped
        outs.append(flat[0])
    all_ops.append(ops.Sub((outs[0], outs[1]), "N-Q", source="property: Y − YQ", precision="float64"))
    return Graph(input_name, (n_inputs,), all_ops, ["N-Q"], name=f"{n.name}−{q.name}")
