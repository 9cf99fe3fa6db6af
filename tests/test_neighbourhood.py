"""The MILP's witness search (large neighbourhoods of the best point) against exhaustive
enumeration of small fixed-point twins: it finds a witness whenever the true maximum clears the
bound, each one replayed by onnxruntime, and never hands over a point that misses the polytope."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import models as M
import vnncomp_qeb.milp.neighbourhood as nb
import vnncomp_qeb.portfolio as P
from vnncomp_qeb.analysis.dra import refined_bounds
from vnncomp_qeb.io.fixed_point import QebNet, faithful_twin
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.milp.backends import backend_chain
from vnncomp_qeb.milp.encode import WITNESS, encode
from vnncomp_qeb.milp.solve import _with_objective, milp_box
from vnncomp_qeb.search.domains import CodeDomain, domain_for

N_IN = 8


def _twin(path, seed, Q):
    rng = np.random.default_rng(seed)
    sizes = (N_IN, 8, 6, 2)
    Ws = [rng.normal(size=(a, b)) / np.sqrt(a) * (1 / 16 if k == 0 else 1)
          for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    bs = [rng.normal(size=b) * 0.1 for b in sizes[1:]]
    onnx.save(faithful_twin(QebNet(f"nb{seed}", Ws, bs, {"family": "acasxu"}), Q), str(path))
    return str(path)


def _case(tmp_path, path, k_lo, eps):
    """Instance |Y_0| < eps over the grid box k_lo..k_lo+3 (4^8 = 65,536 points)."""
    spec = tmp_path / "s.vnnlib"
    spec.write_text(error_bound_v1(k_lo - 0.25, k_lo + 3.25, eps, [0], 2))
    inst = load_instance(str(spec), path)
    dom = domain_for(inst.graph)
    assert isinstance(dom, CodeDomain)
    return inst, dom


def _near_maximum(tmp_path, seed, above=None):
    """The twin of ``seed`` over the grid box −2..1 (4^8 codes): the instance with ε just under
    the true max ``top`` of |Y_0| there (or ``top + above``), its codes and |Y_0|'s values, and
    a ``check`` that replays a point in onnxruntime (the replay if it is a witness)."""
    path = _twin(tmp_path / "t.onnx", seed, 4)
    k_lo = np.full(N_IN, -2.0)
    inst, dom = _case(tmp_path, path, k_lo, 1.0)
    codes = M.grid_points(k_lo, k_lo + 3, 1.0).astype(np.float64)
    y = dom.graph.evaluate(codes)[:, 0]
    top = float(np.abs(y).max())
    inst, dom = _case(tmp_path, path, k_lo, top - 1e-6 * (1 + top) if above is None else top + above)
    case = inst.spec.cases[0]
    L, U = dom.initial(case)

    def check(points):
        r = replay(inst, dom.to_input(points, case)[0])
        return r if r.ok else None

    return SimpleNamespace(inst=inst, dom=dom, case=case, L=L, U=U, codes=codes, y=y, top=top, check=check)


def _search(inst, dom, seconds, start):
    """neighbourhood_search over every polytope of the case from ``start`` (codes); the points
    ``check`` saw and what it returned."""
    case = inst.spec.cases[0]
    L, U = dom.initial(case)
    g = dom.analysis_graph
    bounds, _ = refined_bounds(g, L.astype(float), U.astype(float))
    enc = encode(g, bounds, WITNESS, True)
    y_lo = np.concatenate([bounds[o][0].reshape(-1) for o in g.outputs])
    y_hi = np.concatenate([bounds[o][1].reshape(-1) for o in g.outputs])
    targets = [(_with_objective(enc, p, y_lo, y_hi)[0], p) for p in case.polytopes]
    seen = []

    def check(points):
        seen.append(points[0].copy())
        r = replay(inst, dom.to_input(points, case)[0])
        return r if r.ok else None

    found = nb.neighbourhood_search(enc, targets, start[None], integer_input=True,
                                    deadline=time.monotonic() + seconds, chain=backend_chain(), check=check,
                                    rng=np.random.default_rng(0))
    return found, seen


@pytest.mark.parametrize("seed", range(4))
def test_neighbourhood_search_matches_enumeration(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(nb, "FREE_START", 2)  # start from true neighbourhoods, not the whole box
    path = _twin(tmp_path / "t.onnx", seed, 4)
    rng = np.random.default_rng(seed)
    k_lo = rng.integers(-6, 3, size=N_IN).astype(float)
    inst, dom = _case(tmp_path, path, k_lo, 1.0)
    codes = M.grid_points(k_lo, k_lo + 3, 1.0).astype(np.float64)
    y = dom.graph.evaluate(codes)[:, 0]  # the reference evaluator: bit-exact with onnxruntime here
    top = float(np.abs(y).max())
    worst = codes[np.argmin(np.abs(y))]  # start where the error is smallest
    gap = 1e-6 * (1 + top)
    # ε just below the largest error: a witness, replayed
    inst, dom = _case(tmp_path, path, k_lo, top - gap)
    found, seen = _search(inst, dom, 30.0, worst)
    assert found is not None and found.ok, (top, seen)
    assert abs(found.y[0]) >= top - gap
    # ... just above: no point reaches the unsafe set, so none is handed over
    inst, dom = _case(tmp_path, path, k_lo, top + gap)
    found, seen = _search(inst, dom, 3.0, worst)
    assert found is None and not seen


@pytest.mark.parametrize("prove", [True, False])
def test_milp_box_finds_witness_by_search(tmp_path, prove):
    """Through milp_box: the proof share ends unproven (ε below the true maximum) and the search
    from the falsifier's point returns a replayed witness; a helper (``prove=False``) runs no
    proof model at all and gets there by the search alone."""
    t = _near_maximum(tmp_path, 7)
    dom, case, L, U, codes, y, top, check = t.dom, t.case, t.L, t.U, t.codes, t.y, t.top, t.check
    res = milp_box(dom.analysis_graph, L[0], U[0], case.polytopes, integer_input=True,
                   deadline=time.monotonic() + 30, chain=backend_chain(), check=check,
                   starts=codes[np.argmin(np.abs(y))][None], prove=prove)
    assert not res.proven and len(res.solves) == int(prove) and (prove or res.bound == np.inf)
    assert res.found is not None and res.found.ok and abs(res.found.y[0]) >= top - 1e-6 * (1 + top)


def test_freed_core_searches_the_open_share(tmp_path, monkeypatch):
    """Through the portfolio with two MILP children: the child of the safe polytope proves it
    and its core goes to a helper, whose search finds the witness of the other polytope while
    that polytope's own child is still busy (held here for the whole budget, as a hard proof
    would be); onnxruntime replays the witness."""
    path = _twin(tmp_path / "t.onnx", 7, 4)
    k_lo = np.full(N_IN, -2.0)
    inst, dom = _case(tmp_path, path, k_lo, 1.0)
    ys = dom.graph.evaluate(M.grid_points(k_lo, k_lo + 3, 1.0).astype(np.float64))
    up, down = float(ys[:, 0].max()), float(-ys[:, 0].min())
    far, near = max(up, down), max(min(up, down), 0.0)
    assert far - near > 1e-3  # ε between the two: exactly one polytope is sat
    inst, _ = _case(tmp_path, path, k_lo, (far + near) / 2)
    case = inst.spec.cases[0]
    sat_side = [p for p in case.polytopes if p.contains(ys).any()]
    assert len(sat_side) == 1 and len(case.polytopes) == 2
    real_child, t0 = P._milp_child, time.monotonic()

    def child(graph, domain, share, *args):
        prove = args[8]  # (L, U, integer_input, deadline, backend, verbose, starts, seed, prove, t0, tag)
        if prove and sat_side[0] in share.polytopes:  # the hard share: no answer before the deadline
            time.sleep(max(args[3] - time.monotonic(), 0))
            return False, None, np.inf, ["held"]
        return real_child(graph, domain, share, *args)

    monkeypatch.setattr(P, "_milp_child", child)
    monkeypatch.setattr(P, "SPLIT_DIMS", 0)  # 8 free inputs: straight to the MILP
    monkeypatch.setattr(P, "SPLIT_SHARE", 0.0)
    monkeypatch.setattr(P._Run, "falsify", lambda self: None)
    lines: list[str] = []
    out = P.verify(inst, 40, log=lines.append, settings=P.Settings(milp_workers=2))
    assert out.verdict == "sat" and out.stage == "milp" and out.replay.ok
    assert any(line.split("] milp: ")[-1].startswith("[helper 1] ") and "search: witness" in line
               for line in lines), lines
    assert time.monotonic() - t0 < 30
