"""An instance: the property plus the network file(s) it is about, as one joint IR graph."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

import numpy as np

from vnncomp_qeb.errors import ModelError, QebError, SpecError
from vnncomp_qeb.io.onnx_loader import model_to_graph, read_model
from vnncomp_qeb.io.ort_session import check_runnable
from vnncomp_qeb.io.vnnlib import load_spec
from vnncomp_qeb.ir.compose import compose, twin_graph
from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.spec import Case, Polytope, Spec


@dataclass
class Instance:
    """``spec`` is the property as written: over the flat joint input (spec.n_inputs) and the
    joint output (spec.n_outputs) that onnxruntime's replay of the files gives. ``graph`` is
    what the analyses see, and ``cases`` the property over its outputs: the joint network,
    or — for a pair N, Q whose property only reads ``Y − YQ`` — the twin ``N − Q`` with the
    property restated on the difference (``cases[i]`` is ``spec.cases[i]``, same box).
    ``networks`` maps each network name to its original file, in the spec's order."""

    spec: Spec
    networks: dict[str, str]
    graph: Graph
    cases: list[Case] = None

    def __post_init__(self):
        if self.cases is None:
            self.cases = self.spec.cases


def parse_network_arg(arg: str) -> dict[str, str] | None:
    """The harness's network argument: a path, or a Python list literal of (name, path) pairs
    for multi-network 2.0 instances. Returns None for a plain path."""
    text = arg.strip()
    if not text.startswith("[") or os.path.exists(arg):  # a file that exists is a path, whatever its name
        return None
    try:
        pairs = ast.literal_eval(text)
        return {str(n): str(p) for n, p in pairs}
    except (ValueError, SyntaxError, TypeError) as exc:
        raise QebError(f"cannot read the network list {arg!r}: expected [('NAME', 'path.onnx'), ...]") from exc


def load_runnable(path: str, name: str | None = None) -> Graph:
    """The IR of the model at ``path``, after checking that onnxruntime runs it (the semantics
    verified is onnxruntime's: no verdict on a file it cannot load)."""
    model = read_model(path)
    check_runnable(path)
    return model_to_graph(model, path, name)


def load_instance(spec_path: str, networks: dict[str, str] | str) -> Instance:
    """Load the spec and the networks; ``networks`` is one path (single-network property) or a
    mapping from the spec's network names to paths."""
    spec = load_spec(spec_path)
    if isinstance(networks, str):
        if len(spec.networks) != 1:
            raise SpecError(f"the property declares {len(spec.networks)} networks "
                            f"({', '.join(spec.networks)}); give one file per network", path=spec_path)
        networks = {spec.networks[0]: networks}
    missing = [n for n in spec.networks if n not in networks]
    if missing:
        raise QebError(f"no file given for network(s) {', '.join(missing)} declared in {spec_path}")
    graphs = {n: load_runnable(networks[n], name=n) for n in spec.networks}
    for n, g in graphs.items():
        _check_sizes(spec, n, g, networks[n])
    if spec.version == "1.0":
        if len(networks) > 1:
            raise SpecError(f"a VNN-LIB 1.0 property reads one network, but {len(networks)} were given "
                            f"({', '.join(networks)}); give the difference model as one file, or write "
                            "the property in VNN-LIB 2.0 over the two networks", path=spec_path)
        graph = graphs[spec.networks[0]]
    else:
        twin = pair_twin(spec, graphs)
        if twin is not None:
            return Instance(spec, {n: networks[n] for n in spec.networks}, *twin)
        parts = []
        for n in spec.networks:
            (inp,) = spec.inputs_of(n) or (None,)
            if inp is None:
                raise SpecError(f"network '{n}' declares no input", path=spec_path)
            parts.append((n, graphs[n], inp.index))
        graph = compose(parts, spec.n_inputs)
    return Instance(spec, {n: networks[n] for n in spec.networks}, graph)


def pair_twin(spec: Spec, graphs: dict[str, Graph]) -> tuple[Graph, list[Case]] | None:
    """For two networks reading the same (tied) input whose every unsafe row is a linear function
    of ``Y − YQ``: the twin graph ``N − Q`` (N the first declared) and the cases restated over the
    difference, so that the differential analyses apply as to a difference model; else None."""
    if len(spec.networks) != 2:
        return None
    (n, q) = spec.networks
    (n_in,), (q_in,) = spec.inputs_of(n), spec.inputs_of(q)
    if not np.array_equal(n_in.index, q_in.index):
        return None
    n_out = np.concatenate([v.index for v in spec.outputs_of(n)])
    q_out = np.concatenate([v.index for v in spec.outputs_of(q)])
    if n_out.size != q_out.size:
        return None
    cases = []
    for case in spec.cases:
        polytopes = []
        for p in case.polytopes:
            if not np.array_equal(p.A[:, n_out], -p.A[:, q_out]):
                return None
            rest = np.delete(p.A, np.concatenate([n_out, q_out]), axis=1)
            if rest.size and np.any(rest != 0):
                return None
            polytopes.append(Polytope(p.A[:, n_out].copy(), p.b.copy(), p.strict.copy()))
        cases.append(Case(case.lower, case.upper, polytopes))
    return twin_graph(graphs[n], graphs[q], n_in.index, spec.n_inputs), cases


def _check_sizes(spec: Spec, name: str, g: Graph, path: str) -> None:
    if spec.version == "1.0":
        n_in, n_out = spec.n_inputs, spec.n_outputs
    else:
        ins, outs = spec.inputs_of(name), spec.outputs_of(name)
        if len(ins) != 1:
            raise SpecError(f"network '{name}' must declare exactly one input", path=spec.path)
        n_in = ins[0].index.size
        n_out = int(sum(v.index.size for v in outs))
    if g.input_size != n_in:
        raise ModelError(f"the model has {g.input_size} inputs but the property declares {n_in}", path=path)
    if g.output_size != n_out:
        raise ModelError(f"the model has {g.output_size} outputs but the property declares {n_out}", path=path)
    if spec.version == "2.0":
        order = np.concatenate([v.index for v in spec.outputs_of(name)])
        if not np.array_equal(order, np.arange(order.min(), order.min() + order.size)):
            raise SpecError(f"outputs of network '{name}' must be declared in order", path=spec.path)
