"""An instance: the property plus the network file(s) it is about, as one joint IR graph."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

import numpy as np

from vnncomp_qeb.errors import ModelError, QebError, SpecError
from vnncomp_qeb.io.onnx_loader import model_to_graph, read_model
from vnncomp_qeb.io.model_views import View, input_dtype, view_model, view_session
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
    # how each network is run: its file, at its declared element type, observed at its hidden tensors
    views: dict[str, View] = None

    def __post_init__(self):
        if self.cases is None:
            self.cases = self.spec.cases
        if self.views is None:
            self.views = {n: View(p) for n, p in self.networks.items()}


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
    return load_view(View(path), name)


def load_view(view: View, name: str | None = None, feed: str = "float32") -> Graph:
    """The IR of a network as the query sees it (see :mod:`vnncomp_qeb.io.model_views`), after
    checking that onnxruntime runs it; its input is fed floats of type ``feed``."""
    model = view_model(view) if view.precision else read_model(view.path)
    view_session(view)
    return model_to_graph(model, view.path, name, hidden=view.hidden, feed=feed)


def feed_type(views) -> type:
    """The numpy type the joint input is fed in: the finest of the networks' input types (each
    network rounds it to its own)."""
    return min((input_dtype(v) for v in views), key=lambda t: -np.finfo(t).nmant)


def network_files(spec: Spec, networks: dict[str, str] | str, spec_path: str) -> dict[str, str]:
    """The file of every network the spec declares. A network declared ``equal-to`` or
    ``isomorphic-to`` another reads that one's file unless it is given its own; a single file
    given for a query with one network of its own serves it whatever name it was given under."""
    roots = [n for n in spec.networks if n not in spec.relations]
    if isinstance(networks, str):
        if len(roots) != 1:
            raise SpecError(f"the property declares {len(spec.networks)} networks "
                            f"({', '.join(spec.networks)}); give one file per network", path=spec_path)
        networks = {roots[0]: networks}
    networks = dict(networks)
    if len(networks) == 1 and len(roots) == 1 and roots[0] not in networks:
        networks = {roots[0]: next(iter(networks.values()))}
    files = {}
    for n in spec.networks:
        seen, m = {n}, n
        while m not in networks and m in spec.relations:
            m = spec.relations[m][1]
            if m in seen:
                break
            seen.add(m)
        if m in networks:
            files[n] = networks[m]
    missing = [n for n in spec.networks if n not in files]
    if missing:
        raise QebError(f"no file given for network(s) {', '.join(missing)} declared in {spec_path}")
    return files


def _view(spec: Spec, name: str, path: str) -> View:
    """A network ``isomorphic-to`` another, declared at another element type than its file's, is
    that file converted to the declared type; hidden variables are observed."""
    precision = None
    if spec.relations.get(name, ("",))[0] == "isomorphic-to":
        declared = {v.dtype for v in spec.inputs_of(name) + spec.outputs_of(name)}
        own = input_dtype(View(path))
        if declared == {"float16"} and own != np.float16:
            precision = "float16"
        elif len(declared) == 1 and next(iter(declared)) not in ("float16", np.dtype(own).name):
            raise SpecError(f"network '{name}' is isomorphic-to at {next(iter(declared))}: only a float16 "
                            "conversion is built", path=spec.path)
    return View(path, precision, tuple(v.onnx_name for v in spec.hidden_of(name)))


def load_instance(spec_path: str, networks: dict[str, str] | str) -> Instance:
    """Load the spec and the networks; ``networks`` is one path (single-network property) or a
    mapping from the spec's network names to paths."""
    spec = load_spec(spec_path)
    if spec.version == "1.0":
        if isinstance(networks, dict) and len(networks) > 1:
            raise SpecError(f"a VNN-LIB 1.0 property reads one network, but {len(networks)} were given "
                            f"({', '.join(networks)}); give the difference model as one file, or write "
                            "the property in VNN-LIB 2.0 over the two networks", path=spec_path)
        path = networks if isinstance(networks, str) else next(iter(networks.values()))
        graph = load_runnable(path, name=spec.networks[0])
        _check_sizes(spec, spec.networks[0], graph, path)
        return Instance(spec, {spec.networks[0]: path}, graph)
    files = network_files(spec, networks, spec_path)
    views = {n: _view(spec, n, files[n]) for n in spec.networks}
    feed = np.dtype(feed_type(views.values())).name
    graphs = {n: load_view(views[n], name=n, feed=feed) for n in spec.networks}
    for n, g in graphs.items():
        _check_sizes(spec, n, g, files[n])
    twin = pair_twin(spec, graphs)
    if twin is not None:
        return Instance(spec, files, *twin, views=views)
    parts = []
    for n in spec.networks:
        if not spec.inputs_of(n):
            raise SpecError(f"network '{n}' declares no input", path=spec_path)
        parts.append((n, graphs[n], spec.input_index(n)))
    graph = compose(parts, spec.n_inputs, observe_input=spec.input_copy is not None, products=spec.products)
    return Instance(spec, files, graph, views=views)


def pair_twin(spec: Spec, graphs: dict[str, Graph]) -> tuple[Graph, list[Case]] | None:
    """For two networks reading the same (tied) input whose every unsafe row is a linear function
    of ``Y − YQ``: the twin graph ``N − Q`` (N the first declared) and the cases restated over the
    difference, so that the differential analyses apply as to a difference model; else None."""
    if len(spec.networks) != 2:
        return None
    (n, q) = spec.networks
    n_index, q_index = spec.input_index(n), spec.input_index(q)
    if not np.array_equal(n_index, q_index) or spec.input_copy is not None or spec.products:
        return None
    if spec.hidden_of(n) or spec.hidden_of(q):
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
    return twin_graph(graphs[n], graphs[q], n_index, spec.n_inputs), cases


def _check_sizes(spec: Spec, name: str, g: Graph, path: str) -> None:
    if spec.version == "1.0":
        n_in, n_out = spec.n_inputs, spec.n_outputs
    else:
        ins = spec.inputs_of(name)
        if not ins:
            raise SpecError(f"network '{name}' declares no input", path=spec.path)
        n_in = spec.input_index(name).size
        n_out = spec.observed_index(name).size
    what = "outputs" if spec.version == "1.0" or not spec.hidden_of(name) else "outputs and hidden values"
    if g.input_size != n_in:
        raise ModelError(f"the model has {g.input_size} inputs but the property declares {n_in}", path=path)
    if g.output_size != n_out:
        raise ModelError(f"the model has {g.output_size} {what} but the property declares {n_out}", path=path)
    if spec.version == "2.0":
        order = spec.observed_index(name)
        if not np.array_equal(order, np.arange(order.min(), order.min() + order.size)):
            raise SpecError(f"outputs of network '{name}' must be declared in order", path=spec.path)
