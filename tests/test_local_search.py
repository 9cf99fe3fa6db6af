"""The local search over the input grid (search/moves.py) against exhaustive enumeration of small
fixed-point twins: a climb ends where no single move improves, the iterated search reaches the
true maximum of |N − Q| (each witness replayed by onnxruntime), and every score it keeps is the
reference evaluator's."""

from __future__ import annotations

import time

import numpy as np
import pytest

from test_neighbourhood import N_IN, _case, _near_maximum, _twin
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.search.domains import domain_for
from vnncomp_qeb.search.moves import MoveScorer, climb, grid_values, iterated_search


def test_grid_values_cover_the_box():
    lo, hi = np.array([0.0, 3.0, -2.0]), np.array([3.0, 3.0, 40.0])
    v = grid_values(lo, hi, True, most=8)
    assert v.shape == (8, 3) and np.all(v >= lo) and np.all(v <= hi) and np.all(v == np.round(v))
    assert set(v[:, 0]) == {0, 1, 2, 3} and set(v[:, 1]) == {3} and {-2, 40} <= set(v[:, 2])
    r = grid_values(lo, hi, False)
    assert np.array_equal(r, np.vstack([lo, (lo + hi) / 2, hi]))


@pytest.mark.parametrize("seed", [3, 5, 7])
def test_a_climb_ends_where_no_single_move_improves(tmp_path, seed):
    """Over 7 codes per input: the climb tries the ends and the neighbours of each input."""
    spec = tmp_path / "s.vnnlib"
    spec.write_text(error_bound_v1(np.full(N_IN, -3.25), np.full(N_IN, 3.25), 1.0, [0], 2))
    inst = load_instance(str(spec), _twin(tmp_path / "t.onnx", seed, 4))
    dom = domain_for(inst.graph)
    case = inst.spec.cases[0]
    L, U = dom.initial(case)
    values = grid_values(L[0], U[0], True)
    scorer = MoveScorer(dom.graph, case.margin)
    rng = np.random.default_rng(seed)
    x0 = values[rng.integers(0, values.shape[0], N_IN), np.arange(N_IN)]
    x, m = climb(scorer, x0, float(scorer.full(x0[None])[0]), values, time.monotonic() + 30)
    tol = 1e-12  # batches of different sizes may sum in a different order (BLAS): ulps apart
    assert m == pytest.approx(scorer.full(x[None])[0], abs=tol) and m >= scorer.full(x0[None])[0] - tol
    # every move of one input to an end of its range or a neighbouring code, evaluated one
    # point at a time: none beats the end of the climb
    assert values.shape[0] == 7
    for j in range(N_IN):
        for v in {L[0, j], U[0, j], max(x[j] - 1, L[0, j]), min(x[j] + 1, U[0, j])}:
            y = x.copy()
            y[j] = v
            assert case.margin(dom.graph.evaluate(y[None]))[0] <= m + tol
    # the scorer's move table is the reference evaluator's
    M_ = scorer.moves(x, values)
    for k in range(values.shape[0]):
        y = np.repeat(x[None], N_IN, axis=0)
        y[np.arange(N_IN), np.arange(N_IN)] = values[k]
        assert np.allclose(M_[k], case.margin(dom.graph.evaluate(y)), rtol=0, atol=tol)


@pytest.mark.parametrize("seed", [3, 5, 7, 11])
def test_iterated_search_reaches_the_enumerated_maximum(tmp_path, seed):
    """ε just under the true max of |Y_0| over the 65,536 grid points: the search, started from
    the point of least error, finds a witness onnxruntime confirms."""
    t = _near_maximum(tmp_path, seed)
    L, U, top = t.L, t.U, t.top
    x, m, found = iterated_search(t.dom.graph, t.case.margin, t.codes[np.argmin(np.abs(t.y))][None], L[0], U[0],
                                  True, time.monotonic() + 30, np.random.default_rng(seed), t.check)
    assert found is not None and found.ok and abs(found.y[0]) >= top - 1e-6 * (1 + top)
    assert m >= 0 and np.all(x == np.round(x)) and np.all((x >= L[0]) & (x <= U[0]))


def test_iterated_search_without_a_witness_returns_its_best(tmp_path):
    """ε above the true maximum: no point is accepted; the best margin returned is the exact
    margin of the returned point and not above the enumerated maximum."""
    t = _near_maximum(tmp_path, 3, above=0.01)
    dom, case = t.dom, t.case
    calls = []
    x, m, found = iterated_search(dom.graph, case.margin, t.codes[:5], t.L[0], t.U[0], True,
                                  time.monotonic() + 1.0, np.random.default_rng(0), lambda p: calls.append(p))
    assert found is None and not calls
    assert m == pytest.approx(case.margin(dom.graph.evaluate(x[None]))[0], abs=1e-12) and m <= -0.01 + 1e-9


def test_a_move_table_past_its_deadline_leaves_the_rest_unscored(tmp_path, monkeypatch):
    """On a large network one table of moves takes seconds: past the deadline the moves not yet
    scored are −inf (never chosen), those scored are exact."""
    import vnncomp_qeb.search.moves as moves

    inst, dom = _case(tmp_path, _twin(tmp_path / "t.onnx", 3, 4), np.full(N_IN, -2.0), 1.0)
    case = inst.spec.cases[0]
    L, U = dom.initial(case)
    values = grid_values(L[0], U[0], True)
    scorer = MoveScorer(dom.graph, case.margin)
    full = scorer.moves(L[0], values)
    monkeypatch.setattr(moves, "CHUNK", 3 * N_IN)  # batches of 3 moves
    part = scorer.moves(L[0], values, deadline=time.monotonic() - 1).reshape(-1)
    assert np.all(np.isfinite(part[:3])) and np.all(np.isneginf(part[3:]))
    assert np.allclose(part[:3], full.reshape(-1)[:3], rtol=0, atol=1e-12)
