"""The complete search against exhaustive enumeration, and the MILP machinery on its own.

Ground truth: tiny twins whose input is snapped to a grid small enough to enumerate; the true
maximum of each output difference is computed by onnxruntime over every grid point, then the
MILP is asked at ε 0.1 % above it (must never find a witness) and 0.1 % below it (must never
prove). Zero wrong verdicts over a few hundred cases; nearly all decided.
"""

import threading
import zlib
import time

import numpy as np
import onnx
import onnxruntime as ort
import psutil
import pytest

import models as M
from vnncomp_qeb.io.fixed_point import QebNet, faithful_twin
from vnncomp_qeb.io.instance import load_instance
from vnncomp_qeb.io.replay import replay
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1
from vnncomp_qeb.isolate import CANCELLED, CRASHED, OK, OUT_OF_MEMORY, OUT_OF_TIME, run_isolated, run_isolated_all
from vnncomp_qeb.milp.backends import (INTERRUPTED, OPTIMAL, GiveUp, GurobiBackend, HighsBackend, ScipBackend,
                                       backend_chain, bound_stalled, solve_with_fallback)
import vnncomp_qeb.milp.encode as encode_module
from vnncomp_qeb.milp.encode import PROOF, WITNESS, encode
from vnncomp_qeb.milp.model import MilpModel
from vnncomp_qeb.milp.solve import milp_box
from vnncomp_qeb.analysis.dra import refined_bounds
from vnncomp_qeb.ir.fuse import normalise
from vnncomp_qeb.search.domains import CodeDomain, domain_for

SCALE = 0.25


def _fixed_point_twin(path, seed, Q):
    rng = np.random.default_rng(seed)
    sizes = (3, int(rng.integers(4, 7)), int(rng.integers(4, 7)), 2)
    Ws = [rng.normal(size=(a, b)) / np.sqrt(a) * (1 / 64 if k == 0 else 1) for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    bs = [rng.normal(size=b) * 0.1 for b in sizes[1:]]
    net = QebNet(f"rand{seed}", Ws, bs, {"family": "acasxu"})
    onnx.save(faithful_twin(net, Q), str(path))
    return str(path), 1.0  # integer inputs: grid step 1


def _static_twin(d, seed, fmt, pc):
    f = M.float_mlp(d / f"f{seed}.onnx", sizes=(3, 6, 6, 2), seed=seed)
    q = M.quantize(f, d / f"q{seed}{fmt}{pc}.onnx", fmt, pc, n_in=3, seed=seed)
    return M.snapped_twin(f, q, d / f"t{seed}{fmt}{pc}.onnx", SCALE), SCALE


def _ground_truth_cases(path, step, rng, n_boxes):
    """(lower, upper, output, sign, true max of sign·y_output) for random grid boxes."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    dtype = np.float64 if sess.get_inputs()[0].type == "tensor(double)" else np.float32
    out = []
    for _ in range(n_boxes):
        k_lo = rng.integers(-6, 4, size=3)
        k_hi = k_lo + rng.integers(1, 5, size=3)
        x = M.grid_points(k_lo, k_hi, step).astype(dtype)
        y = np.vstack([sess.run(None, {name: p[None]})[0] for p in x]).astype(np.float64)
        for o in range(y.shape[1]):
            for sign in (1, -1):
                out.append(((k_lo - 0.25) * step, (k_hi + 0.25) * step, o, sign, float((sign * y[:, o]).max())))
    return out


def _spec_text(lower, upper, o, sign, eps, n_out):
    """Unsafe: sign·Y_o ≥ eps (one polytope)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(lower.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (a, b) in enumerate(zip(lower, upper)):
        lines += [f"(assert (>= X_{i} {float(a)!r}))", f"(assert (<= X_{i} {float(b)!r}))"]
    lines.append(f"(assert (>= Y_{o} {float(eps)!r}))" if sign > 0 else f"(assert (<= Y_{o} {-float(eps)!r}))")
    return "\n".join(lines) + "\n"


def _milp_verdict(inst, deadline_s=20.0):
    case = inst.spec.cases[0]
    dom = domain_for(inst.graph)
    L, U = dom.initial(case)

    def check(points):
        r = replay(inst, dom.to_input(points, case)[0])
        return r if r.ok else None

    res = milp_box(dom.analysis_graph, L[0], U[0], case.polytopes, integer_input=isinstance(dom, CodeDomain),
                   deadline=time.monotonic() + deadline_s, chain=backend_chain(), check=check)
    return "unsat" if res.proven else ("sat" if res.found else "open"), res


FAMILIES = [("fixed-point", Q) for Q in (4, 6, 8)] + [("static", form) for form in
                                                        (("QDQ", False), ("QDQ", True), ("QOperator", False), ("QOperator", True))]


@pytest.mark.parametrize("family, variant", FAMILIES, ids=[f"{f}-{v}" for f, v in FAMILIES])
def test_milp_verdicts_match_enumeration(tmp_path, family, variant):
    rng = np.random.default_rng(zlib.crc32(f"{family}{variant}".encode()))
    wrong, undecided, total = [], 0, 0
    for seed in range(4 if family == "fixed-point" else 2):
        if family == "fixed-point":
            path, step = _fixed_point_twin(tmp_path / f"t{seed}.onnx", seed, variant)
        else:
            path, step = _static_twin(tmp_path, seed, *variant)
        for lower, upper, o, sign, top in _ground_truth_cases(path, step, rng, n_boxes=2 if family == "fixed-point" else 3):
            gap = 1e-3 * abs(top) + 1e-5  # the dual bound is trusted to 1e-6 of the objective's scale
            for eps, truth in ((top + gap, "unsat"), (top - gap, "sat")):
                spec = tmp_path / "s.vnnlib"
                spec.write_text(_spec_text(lower, upper, o, sign, eps, 2))
                inst = load_instance(str(spec), path)
                verdict, res = _milp_verdict(inst)
                total += 1
                if verdict == "open":
                    undecided += 1
                    print("undecided", truth, top, eps, res.bound, [(r.status, r.bound, r.objective) for r in res.solves])
                elif verdict != truth:
                    wrong.append((seed, o, sign, top, eps, verdict, res.bound))
                if verdict == "sat":
                    assert res.found.ok and sign * res.found.y[o] >= eps
    print(f"{family} {variant}: {total} verdicts, {len(wrong)} wrong, {undecided} undecided")
    assert not wrong, wrong
    assert undecided <= 0.05 * total


def test_unreached_polytope_keeps_a_certified_bound(tmp_path):
    """A polytope the proof share never reaches still bounds the slack (interval bound): finite
    and above the enumerated maximum, so a timeout reports a certified bound, not inf."""
    rng = np.random.default_rng(7)
    for seed in range(2):
        path, step = _fixed_point_twin(tmp_path / f"t{seed}.onnx", seed, 4)
        for lower, upper, o, sign, top in _ground_truth_cases(path, step, rng, n_boxes=2):
            eps = top + 0.01
            spec = tmp_path / "s.vnnlib"
            spec.write_text(_spec_text(lower, upper, o, sign, eps, 2))
            verdict, res = _milp_verdict(load_instance(str(spec), path), deadline_s=0.0)
            assert verdict == "open" and not res.solves  # no time: nothing solved
            assert np.isfinite(res.bound) and res.bound >= top - eps - 1e-9, (res.bound, top - eps)


def _tiny_model(rng, n=8):
    m = MilpModel()
    x = m.add_vars(np.full(n, -3.0), np.full(n, 3.0), integer=True)
    y = m.add_vars(np.full(n, -1.0), np.full(n, 2.0))
    A = rng.integers(-3, 4, size=(6, n))
    m.add_rows(np.tile(x, (6, 1)), A, -4.0, 5.0)
    m.add_rows(np.stack([y, x], 1), np.stack([np.ones(n), -0.5 * np.ones(n)], 1), -0.25, 0.25)
    c = rng.normal(size=2 * n)
    m.set_objective(np.concatenate([x, y]), c, 0.5)
    return m, A, c


def _tiny_best(A, c):
    """The optimum of :func:`_tiny_model` (n = 5) by enumerating its 7^5 integer points."""
    grid = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 5, indexing="ij"), -1).reshape(-1, 5)
    ok = np.all((grid @ A.T >= -4) & (grid @ A.T <= 5), axis=1)
    # y_i ∈ [0.5x − 0.25, 0.5x + 0.25] ∩ [−1, 2]: pick the best end per sign of its cost
    g = grid[ok]
    ylo, yhi = np.maximum(0.5 * g - 0.25, -1), np.minimum(0.5 * g + 0.25, 2)
    feas = np.all(ylo <= yhi, axis=1)
    return (g @ c[:5] + np.where(c[5:] > 0, yhi, ylo) @ c[5:] + 0.5)[feas].max()


def _knapsack(rng, n: int, rows: int = 1):
    """A 0/1 knapsack (maximised) that HiGHS's presolve does not solve: its nodes are searched."""
    m = MilpModel()
    x = m.add_vars(np.zeros(n), np.ones(n), integer=True)
    w = rng.integers(10, 100, size=(rows, n)).astype(float)
    m.add_rows(np.tile(x, (rows, 1)), w, -np.inf, w.sum(axis=1) / 2 + 0.5)
    m.set_objective(x, w[0] + rng.integers(-5, 6, size=n))
    return m


def test_backends_agree_with_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(3):
        m, A, c = _tiny_model(rng, n=5)
        best = _tiny_best(A, c)
        for backend in (HighsBackend(), ScipBackend()):
            r = backend.solve(m, 10)
            assert r.status == OPTIMAL and abs(r.objective - best) < 1e-6 and r.bound >= best - 1e-6, backend.name
            assert np.all(np.abs(m.row_values(r.x)[: 6] - A @ r.x[:5]) < 1e-9)


def test_cutoff_keeps_the_bound_sound():
    """With a cutoff the solver prunes everything at or below it: the bound it returns is never
    below the true optimum (enumerated, or solved without a cutoff), equals the cutoff when the
    optimum lies below it (a proof), and the optimum is still found when it lies above."""
    rng = np.random.default_rng(3)
    models = []
    for _ in range(2):
        m, A, c = _tiny_model(rng, n=5)
        models.append((m, _tiny_best(A, c)))
    k = _knapsack(rng, 40)
    models.append((k, HighsBackend().solve(k, 30).objective))
    for m, best in models:
        for backend in (HighsBackend(), ScipBackend()):
            for cutoff in (best - 1.5, best - 0.25, best + 0.25, best + 3.0):
                r = backend.solve(m, 30, cutoff=cutoff)
                assert r.bound >= best - 1e-6, (backend.name, cutoff)
                if cutoff < best:
                    assert r.objective is not None and abs(r.objective - best) < 1e-6, (backend.name, cutoff)
                else:
                    assert r.bound <= cutoff + 1e-6, (backend.name, cutoff)


def test_give_up_hands_over_only_above_keep_below():
    """Past its share a proof hands its time over (message ``share``) unless its bound is already
    below ``keep_below``: then it keeps the core until its own time limit."""
    m = _knapsack(np.random.default_rng(1), 300, rows=40)  # HiGHS cannot finish it in seconds
    r = HighsBackend().solve(m, 30, give_up=GiveUp(time.monotonic()))
    assert r.message == "share" and r.bound >= (r.objective or -np.inf)
    r = HighsBackend().solve(m, 1.0, give_up=GiveUp(time.monotonic(), keep_below=np.inf))
    assert r.message != "share"


def test_partial_start_and_restricted_columns():
    """Every available back-end takes a start for some columns only (the witness search's
    neighbourhood step) and honours ``MilpModel.restricted``: with x0, x1 fixed at (1, −1) the
    best of y = x0 − 2·x1 + 3·x2 − x3 over integers in [−3, 3] with |Σx| ≤ 2 is 15, at x2 = 3,
    x3 = −3 (enumerated below)."""
    m = MilpModel()
    x = m.add_vars(np.full(4, -3.0), np.full(4, 3.0), integer=True)
    y = m.add_vars(np.full(1, -100.0), np.full(1, 100.0))
    coef = np.array([1.0, -2.0, 3.0, -1.0])
    m.add_rows(np.array([[y[0], *x]]), np.concatenate([[1.0], -coef])[None], 0.0, 0.0)
    m.add_rows(x[None], np.ones((1, 4)), -2.0, 2.0)
    m.set_objective(y, np.ones(1))
    grid = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 2, indexing="ij"), -1).reshape(-1, 2)
    pts = np.hstack([np.tile([1.0, -1.0], (grid.shape[0], 1)), grid])
    best = (pts @ coef)[np.abs(pts.sum(1)) <= 2].max()
    sub = m.restricted(x[:2], np.array([1.0, -1.0]), np.array([1.0, -1.0]))
    assert m.bounds()[0][x[0]] == -3.0  # the original keeps its bounds
    for backend in (HighsBackend(), ScipBackend(), GurobiBackend()):
        if not backend.available():
            continue
        r = backend.solve(sub, 10, start=(x, np.array([1.0, -1.0, 0.0, 0.0])))
        if backend.name == "gurobi" and r.status != OPTIMAL:
            continue  # no usable licence here
        assert r.status == OPTIMAL and abs(r.objective - best) < 1e-9, backend.name
        assert np.allclose(r.x[x[:2]], [1.0, -1.0]), backend.name


def test_bound_stall_rule():
    """A proof gives up only when even 3× its recent fall cannot reach the target in time."""
    flat = [(t / 10, 0.9 - 0.0005 * t) for t in range(5, 61)]  # MNIST P1 Q4: 0.915 → 0.888 in 8 s
    assert bound_stalled(flat, -1e-6, 24.0)
    assert not bound_stalled(flat[:-5], -1e-6, 24.0)  # 5.5 s < a quarter of the limit
    assert not bound_stalled(flat, -1e-6, 100.0)  # 6 s is under a quarter of a 100 s limit
    falling = [(t / 10, 1.0 - 0.01 * t) for t in range(0, 61)]  # 0.1 per second: reaches 0 in time
    assert not bound_stalled(falling, -1e-6, 24.0)
    late = [(5.0, 0.9), (6.0, 0.9)]  # the bound only just appeared: not judged
    assert not bound_stalled(late, -1e-6, 24.0)
    assert not bound_stalled([(3.0, -0.5), (6.0, -0.5)], -1e-6, 24.0)  # already below the target
    assert not bound_stalled([], -1e-6, 24.0)


def test_interrupt_from_another_thread():
    rng = np.random.default_rng(1)
    m = MilpModel()  # a knapsack-like model HiGHS cannot finish in a fraction of a second
    n = 300
    x = m.add_vars(np.zeros(n), np.ones(n), integer=True)
    w = rng.integers(1000, 2000, size=(40, n))
    m.add_rows(np.tile(x, (40, 1)), w, -np.inf, w.sum(axis=1) / 2 + 0.5)
    m.set_objective(x, rng.integers(1000, 2000, size=n))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    r = HighsBackend().solve(m, 30, stop=stop)
    assert time.monotonic() - t0 < 5
    assert r.status in (INTERRUPTED, OPTIMAL) and r.bound >= (r.objective or -np.inf)


def test_gurobi_size_limited_licence_falls_back():
    if not GurobiBackend.available():
        pytest.skip("gurobipy not installed")
    rng = np.random.default_rng(2)
    m = MilpModel()
    x = m.add_vars(np.zeros(2500), np.ones(2500), integer=True)  # above the pip licence's 2000
    m.add_rows(x[None, :], np.ones((1, 2500)), -np.inf, 3.5)
    m.set_objective(x, rng.random(2500))
    r = GurobiBackend().solve(m, 10)
    if r.status != "error":
        pytest.skip("a full Gurobi licence is present")
    assert "size-limited" in r.message
    fallback = solve_with_fallback([GurobiBackend(), HighsBackend()], m, 10)
    assert fallback.backend == "highs" and fallback.status == OPTIMAL and abs(fallback.objective - np.sort(m.cost())[-3:].sum()) < 1e-9


def test_encodings_contain_onnxruntime(tmp_path):
    """Inputs fixed at grid points: the proof model's range of every output contains what
    onnxruntime computes, and the witness model reproduces it."""
    path, step = _static_twin(tmp_path, 7, "QDQ", True)
    graph = normalise(load_instance(_write_box(tmp_path), path).graph)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for _ in range(8):
        x = (rng.integers(-4, 5, size=3) * step).astype(np.float32)
        y = sess.run(None, {"X": x[None]})[0][0].astype(np.float64)
        lo, hi = x.astype(np.float64) - 0.05, x.astype(np.float64) + 0.05  # contains one grid point
        bounds, _ = refined_bounds(graph, lo[None], hi[None])
        for mode in (PROOF, WITNESS):
            enc = encode(graph, bounds, mode)
            for j in range(2):
                for sign in (1, -1):
                    m = enc.model.copy()
                    m.set_objective(enc.outputs[j:j + 1], np.array([float(sign)]))
                    r = HighsBackend().solve(m, 10)
                    assert r.status == OPTIMAL
                    if mode == PROOF:
                        assert sign * y[j] <= r.bound + 1e-7
                    else:
                        assert abs(r.objective - sign * y[j]) <= 1e-5 * (1 + abs(y[j]))


def _write_box(tmp_path):
    p = tmp_path / "box.vnnlib"
    p.write_text(error_bound_v1(np.full(3, -1.0), np.full(3, 1.0), 1.0, [0, 1], 2))
    return str(p)


def _hog(mb):
    block = np.ones(int(mb * 2**20 / 8))
    time.sleep(5)
    return block.sum()


def _sleep(s):
    time.sleep(s)
    return "woke"


def _boom():
    raise ValueError("broken solver")


def test_isolation_watchdog():
    r = run_isolated(_sleep, 0.1, deadline=time.monotonic() + 5)
    assert r.status == OK and r.value == "woke"
    t0 = time.monotonic()
    r = run_isolated(_sleep, 30, deadline=time.monotonic() + 0.5)
    assert r.status == OUT_OF_TIME and time.monotonic() - t0 < 3
    r = run_isolated(_hog, 600, deadline=time.monotonic() + 10, memory_mb=300)
    assert r.status == OUT_OF_MEMORY and r.peak_mb > 300
    r = run_isolated(_boom, deadline=time.monotonic() + 5)
    assert r.status == CRASHED and "broken solver" in r.message
    assert not psutil.Process().children(recursive=True)


def _report_then_sleep(values, s):
    from vnncomp_qeb.isolate import report

    for v in values:
        report(v)
    time.sleep(s)
    return "woke"


def test_interim_results_survive_the_watchdog():
    """A child stopped at the deadline keeps the last interim result it reported (a MILP share's
    certified bound so far), and one that answers keeps its answer."""
    rs = run_isolated_all([(_report_then_sleep, ([3.0, 1.5], 30)), (_report_then_sleep, ([7.0], 0.1))],
                          deadline=time.monotonic() + 1.5)
    assert rs[0].status == OUT_OF_TIME and rs[0].progress == 1.5
    assert rs[1].status == OK and rs[1].value == "woke" and rs[1].progress == 7.0
    assert not psutil.Process().children(recursive=True)


def test_milp_reports_its_bound_as_it_goes(tmp_path):
    """milp_box tells its caller a certified bound on the best slack as it goes: never below the
    true maximum (enumerated), never rising, ending at the bound it returns."""
    path, step = _fixed_point_twin(tmp_path / "t.onnx", 1, 4)
    rng = np.random.default_rng(5)
    lower, upper, o, sign, top = _ground_truth_cases(path, step, rng, n_boxes=1)[0]
    eps = top - 0.5 * abs(top) - 1e-3  # reachable: the slack's maximum is top − eps > 0
    spec = tmp_path / "s.vnnlib"
    spec.write_text(_spec_text(lower, upper, o, sign, eps, 2))
    inst = load_instance(str(spec), path)
    case = inst.spec.cases[0]
    dom = domain_for(inst.graph)
    L, U = dom.initial(case)
    told: list[float] = []
    res = milp_box(dom.analysis_graph, L[0], U[0], case.polytopes, integer_input=isinstance(dom, CodeDomain),
                   deadline=time.monotonic() + 20, chain=backend_chain(), check=lambda p: None, search=False,
                   progress=told.append)
    assert told and told[-1] == res.bound
    assert all(a >= b for a, b in zip(told, told[1:]))
    assert min(told) >= (top - eps) * (1 - 1e-6) - 1e-9


def test_parallel_children_stop_when_one_is_enough():
    """Children run at once; the first result that is enough cancels the rest, and each child
    gets its share of the memory cap."""
    t0 = time.monotonic()
    rs = run_isolated_all([(_sleep, (30,)), (_sleep, (0.2,)), (_sleep, (30,))], deadline=t0 + 20,
                          enough=lambda r: r.status == OK)
    assert [r.status for r in rs] == [CANCELLED, OK, CANCELLED] and rs[1].value == "woke"
    assert time.monotonic() - t0 < 10
    # the cap is shared: each child's share is 300 MB of its own, which the 400 MB hog exceeds
    # though the whole cap would hold it
    rs = run_isolated_all([(_hog, (400,)), (_sleep, (0.2,))], deadline=time.monotonic() + 10,
                          memory_mb=2 * 300)
    assert rs[0].status == OUT_OF_MEMORY and rs[1].status == OK
    assert not psutil.Process().children(recursive=True)


def test_a_big_parent_does_not_count_against_its_children():
    """A forked child maps every page its parent holds (its resident size starts at the parent's):
    only the memory the child holds of its own counts against its cap."""
    ballast = np.ones(600 * 2**20 // 8)  # 600 MB resident in this process
    rs = run_isolated_all([(_sleep, (0.6,)), (_sleep, (0.6,))], deadline=time.monotonic() + 10, memory_mb=2 * 200)
    assert [r.status for r in rs] == [OK, OK] and all(r.peak_mb < 200 for r in rs)
    assert ballast.sum() > 0


def test_freed_core_gets_a_helper():
    """A child that ends early frees its core for the helper ``refill`` hands out; nobody waits
    for a helper (cancelled when the calls are done), but its result can be enough."""
    asked = []

    def refill(results):
        asked.append([r is not None for r in results])
        return (_sleep, (30,)) if len(asked) == 1 else None

    t0 = time.monotonic()
    rs = run_isolated_all([(_sleep, (0.2,)), (_sleep, (1.5,))], deadline=t0 + 20, refill=refill)
    assert [r.status for r in rs] == [OK, OK, CANCELLED] and time.monotonic() - t0 < 10
    assert asked[0] == [True, False] and len(asked) == 2  # the helper was started once, on the first end
    asked.clear()
    rs = run_isolated_all([(_sleep, (0.2,)), (_sleep, (30,))], deadline=t0 + 20,
                          enough=lambda r: r.status == OK and r.value == "early",
                          refill=lambda results: (_early, ()) if len(results) == 2 else None)
    assert [r.status for r in rs] == [OK, CANCELLED, OK] and rs[2].value == "early"
    assert time.monotonic() - t0 < 15
    assert not psutil.Process().children(recursive=True)


def _early():
    time.sleep(0.3)
    return "early"


def _code_box(tmp_path, path, k_lo, k_hi, step):
    """The instance of the grid box ``k_lo..k_hi`` (steps of ``step``, each side padded by a
    quarter step) on the twin at ``path``, with its code-space domain and initial code box."""
    spec = tmp_path / "s.vnnlib"
    spec.write_text(error_bound_v1((k_lo - 0.25) * step, (k_hi + 0.25) * step, 1.0, [0, 1], 2))
    inst = load_instance(str(spec), path)
    dom = domain_for(inst.graph)
    assert isinstance(dom, CodeDomain)
    L, U = dom.initial(inst.spec.cases[0])
    return inst, dom, L, U


@pytest.mark.parametrize("kind", ["fixed-point-4", "fixed-point-8", "pow2-qdq"])
def test_exact_rounding_bands_stay_sound(tmp_path, kind):
    """Where the exactness analysis narrows a rounding band (code-space graph), every mode's
    bounds still contain what onnxruntime computes at every grid point of the box."""
    from vnncomp_qeb.analysis.dra import MODES, difference_bounds

    if kind == "pow2-qdq":
        path, step = M.pow2_qdq_mlp(tmp_path / "p.onnx", sizes=(3, 8, 8, 2), seed=5), 2.0**-4
    else:
        path, step = _fixed_point_twin(tmp_path / "t.onnx", 11, int(kind[-1]))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    dtype = np.float64 if sess.get_inputs()[0].type == "tensor(double)" else np.float32
    rng = np.random.default_rng(4)
    marked = 0
    for _ in range(4):
        k_lo = rng.integers(-8, 4, size=3)
        k_hi = k_lo + rng.integers(1, 6, size=3)
        inst, dom, L, U = _code_box(tmp_path, path, k_lo, k_hi, step)
        marked = max(marked, sum(getattr(op, "exact_step", None) is not None for op in dom.analysis_graph.ops))
        x = M.grid_points(k_lo, k_hi, step).astype(dtype)
        y = np.vstack([sess.run(None, {name: p[None]})[0] for p in x]).astype(np.float64)
        for mode in MODES:
            lo, hi = difference_bounds(dom.analysis_graph, L.astype(float), U.astype(float), mode)
            assert np.all(y >= lo - 1e-12) and np.all(y <= hi + 1e-12), mode
    assert marked > 0, "the analysis should find exact rounding steps in this model"


def _assert_cuts_hold(graph, cuts, codes) -> int:
    """Every cut holds at every code point (reference evaluator); returns how many relational
    rows have a nonzero slope in z − ẑ."""
    values = graph.run(codes.reshape((-1,) + tuple(graph.input_shape)), keep_all=True)
    relational = 0
    for cut in cuts:
        lhs = sum(np.asarray(c, dtype=float) * values[t].reshape(codes.shape[0], -1)
                  for t, c in zip(cut.tensors, cut.coefs))
        tol = 1e-9 * (1 + np.abs(lhs))
        assert np.all(lhs >= np.asarray(cut.lo) - tol) and np.all(lhs <= np.asarray(cut.hi) + tol), cut.tensors
        if len(cut.tensors) == 4:
            relational += int(np.sum(np.asarray(cut.coefs[2]) != 0))
    return relational


@pytest.mark.parametrize("kind", ["fixed-point-4", "fixed-point-8", "static-qdq"])
def test_difference_cuts_hold_on_every_grid_point(tmp_path, kind):
    """The DRA relations added to the proof MILP (intervals of z − ẑ and a − â, and the linear
    relaxation of a − â in z − ẑ) hold at every grid point of the box, per the reference
    evaluator (bit-exact with onnxruntime on these twins)."""
    from vnncomp_qeb.milp.solve import difference_cuts

    if kind == "static-qdq":
        path, step = _static_twin(tmp_path, 5, "QDQ", False)
    else:
        path, step = _fixed_point_twin(tmp_path / "t.onnx", 13, int(kind[-1]))
    rng = np.random.default_rng(8)
    for _ in range(6):
        k_lo = rng.integers(-8, 4, size=3)
        k_hi = k_lo + rng.integers(2, 7, size=3)
        inst, dom, L, U = _code_box(tmp_path, path, k_lo, k_hi, step)
        g = dom.analysis_graph
        bounds, relaxations = refined_bounds(g, L.astype(float), U.astype(float))
        cuts = difference_cuts(g, bounds, relaxations)
        assert cuts, "a layered twin has difference relations"
        _assert_cuts_hold(g, cuts, M.grid_points(L[0], U[0], 1.0))


def _solves_at(enc, code):
    """The encoding with its input fixed at ``code``, maximised and minimised on each of the first
    two outputs: ``(output, sign, result)`` per solve."""
    m = enc.model.copy()
    m.add_rows(enc.inputs[:, None], np.ones((enc.inputs.size, 1)), code, code)
    for j in range(2):
        for sign in (1, -1):
            m.set_objective(enc.outputs[j:j + 1], np.array([float(sign)]))
            yield j, sign, HighsBackend().solve(m, 30)


def _mnist_instance(tmp_path, Q, image):
    """QEBVerif's two-layer MNIST network at Q bits, radius-3 box around paper image ``image``."""
    from vnncomp_qeb.io.fixed_point import load_qebnet

    root = __file__.rsplit("/tests/", 1)[0]
    net = load_qebnet(f"{root}/specs/networks/qebverif/PTQ_mnist_2blk_100_100_in_8_relu_0.npz")
    x0 = np.load(f"{root}/specs/networks/mnist_samples.npz")["paper_images"][image].astype(float)
    path = tmp_path / "twin.onnx"
    onnx.save(faithful_twin(net, Q), str(path))
    spec = tmp_path / "s.vnnlib"
    spec.write_text(error_bound_v1(np.clip(x0 - 3, 0, 255), np.clip(x0 + 3, 0, 255), 1.0, [0], 10))
    return load_instance(str(spec), str(path)), str(path)


def _encode_and_check_points(inst, model_path, n_random, rng, witness_exact=False) -> int:
    """Encode the proof model over the spec's box (with the difference cuts), then fix its input
    at the box's corners and ``n_random`` random grid points in turn: the model stays feasible
    and its range of the first two outputs contains onnxruntime's value. With ``witness_exact``
    (every rounding computed exactly), the witness model fixed at the same points is feasible and
    pins those outputs to onnxruntime's values, ties included. Returns the number of staircase
    cuts."""
    from vnncomp_qeb.milp.solve import difference_cuts

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    dom = domain_for(inst.graph)
    assert isinstance(dom, CodeDomain)
    L, U = dom.initial(inst.spec.cases[0])
    g = dom.analysis_graph
    bounds, relaxations = refined_bounds(g, L.astype(float), U.astype(float))
    enc = encode(g, bounds, PROOF, True, difference_cuts(g, bounds, relaxations))
    wit = encode(g, bounds, WITNESS, True)
    corners = np.array(np.meshgrid(*zip(L[0], U[0]))).reshape(L.shape[1], -1).T if L.shape[1] <= 4 else np.vstack([L, U])
    codes = np.vstack([corners, rng.integers(L[0], U[0] + 1, size=(n_random, L.shape[1]))]).astype(np.float64)
    x = dom.to_input(codes, inst.spec.cases[0]).astype(dtype).reshape((-1,) + tuple(inst.graph.input_shape))
    ys = np.vstack([sess.run(None, {inp.name: p[None]})[0] for p in x]).astype(np.float64)
    for code, y in zip(codes, ys):
        for j, sign, r in _solves_at(enc, code):
            assert r.status == OPTIMAL, (code, r.status)
            assert sign * y[j] <= r.bound + 1e-7 * (1 + abs(y[j]))
        if not witness_exact:
            continue
        for j, sign, r in _solves_at(wit, code):
            assert r.status == OPTIMAL, (code, "witness model", r.status)
            assert abs(r.objective - sign * y[j]) <= 1e-6 * (1 + abs(y[j])), (code, r.objective, y[j])
    return enc.n_stair_cuts


def test_proof_model_holds_at_grid_points_tiny_twin(tmp_path):
    """Staircase hull cuts (and every other row) hold: int8 per-channel QDQ twin, boxes of 7
    codes per input, every corner and 40 random grid points."""
    path, step = _static_twin(tmp_path, 11, "QDQ", True)
    rng = np.random.default_rng(4)
    stair = 0
    for _ in range(2):
        k_lo = rng.integers(-6, 1, size=3)
        inst, _, _, _ = _code_box(tmp_path, path, k_lo, k_lo + 6, step)
        stair += _encode_and_check_points(inst, path, 40, rng)
    assert stair > 0, "the boxes span several values per rounding neuron"


@pytest.mark.parametrize("Q", [4, 8])
def test_proof_model_holds_at_grid_points_mnist(tmp_path, Q):
    """The same on QEBVerif's two-layer MNIST network, radius-3 box around a paper image, where
    the 4-bit hidden neurons take a few values each (most of the staircase cuts' gain); and the
    witness model reproduces onnxruntime there (its second layer's input lies on a grid of 1/8
    of a rounding step, so ties are the rule: a witness band narrowed against ties made nearly
    every point of this network infeasible)."""
    inst, path = _mnist_instance(tmp_path, Q, 1)
    assert all(getattr(op, "exact_step", None) is not None for op in domain_for(inst.graph).analysis_graph.ops
               if op.kind in ("Round", "FakeQuant"))
    assert _encode_and_check_points(inst, path, 6, np.random.default_rng(5), witness_exact=True) > 50


@pytest.mark.parametrize("Q", [4, 8])
def test_relational_cuts_on_mnist_twin(tmp_path, monkeypatch, Q):
    """On QEBVerif's two-layer MNIST network (radius-3 box around a paper image) the relations
    depend on z − ẑ (nonzero slopes), hold at sampled and extreme codes, and tighten the
    LP relaxation's bound of the output difference."""
    from vnncomp_qeb.milp.solve import difference_cuts

    inst, _ = _mnist_instance(tmp_path, Q, 0)
    dom = domain_for(inst.graph)
    L, U = dom.initial(inst.spec.cases[0])
    g = dom.analysis_graph
    bounds, relaxations = refined_bounds(g, L.astype(float), U.astype(float))
    cuts = difference_cuts(g, bounds, relaxations)
    rng = np.random.default_rng(2)
    codes = np.vstack([rng.integers(L[0], U[0] + 1, size=(3000, L.shape[1])),
                       np.where(rng.random((1000, L.shape[1])) < 0.5, L[0], U[0])]).astype(float)
    assert _assert_cuts_hold(g, cuts, codes) > 10

    def lp_bound(chosen, stair_max):
        monkeypatch.setattr(encode_module, "STAIR_MAX", stair_max)
        enc = encode(g, bounds, PROOF, False, chosen)
        m = enc.model.relaxation()
        m.set_objective(enc.outputs[:1], np.ones(1))  # max of N − Q on the target output
        r = HighsBackend().solve(m, 60)
        assert r.status == OPTIMAL
        return r.bound

    intervals = [c for c in cuts if len(c.tensors) == 2]
    stair_max = encode_module.STAIR_MAX
    plain, relational = lp_bound(intervals, 0), lp_bound(cuts, 0)
    assert relational < plain - 1e-6
    # the staircase hull cuts tighten further; on this 4-bit twin they leave the relational
    # rows nothing to add (measured: equal to 1e-9), on the 8-bit one both count
    both, stair_only = lp_bound(cuts, stair_max), lp_bound(intervals, stair_max)
    assert both <= min(relational, stair_only) + 1e-7
    assert (both < stair_only - 1e-6) if Q == 8 else (stair_only < relational - 1e-6), (plain, relational, stair_only, both)
