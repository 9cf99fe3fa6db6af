"""Scale-out on a real Ray cluster of several nodes on this machine (127.0.0.1 only). ``bench
--ray``: the same verdicts as a local run, a node killed mid-run loses no instance and records
none twice, --resume runs only what the journal lacks. ``verify --ray``: MILP shares and DRA
batches on the workers give the verdicts exhaustive enumeration gives."""

import os
import shutil
import threading
import time

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every Ray process on 127.0.0.1
ray = pytest.importorskip("ray")  # pinned in requirements.txt: always present
from ray.cluster_utils import Cluster  # noqa: E402

from conftest import EXAMPLES  # noqa: E402
from vnncomp_qeb import bench  # noqa: E402
from vnncomp_qeb.io.vnnlib_writer import error_bound_v1  # noqa: E402


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node runs no task
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def _rows(timeout=None):
    return bench.read_instances(os.path.join(EXAMPLES, "instances.csv"), timeout)


def test_ray_verdicts_equal_a_local_run(cluster, tmp_path):
    c, _ = cluster
    local = bench.run_all(_rows(), 2, ["--backend", "highs"], progress=False, out_dir=str(tmp_path / "local"))
    on_ray = bench.run_all(_rows(), 1, ["--backend", "highs"], progress=False, out_dir=str(tmp_path / "ray"),
                           ray_address=c.address)
    assert [r.verdict for r in on_ray] == [r.verdict for r in local] == ["unsat", "unsat", "sat", "sat"]
    assert all(r.node.startswith("127.0.0.1/") for r in on_ray)
    assert {r.node for r in local} == {"local"}


def _slow_rows(tmp_path, n):
    """Instances that run to their (short) timeout: branch and bound on a wide ACAS Xu box."""
    import numpy as np

    shutil.copy(os.path.join(EXAMPLES, "onnx", "ACASXU_run2a_1_1_batch_2000_int8_twin.onnx"), tmp_path / "t.onnx")
    c = np.array([0.2, -0.1, 0.0, -0.3, 0.4])
    lines = []
    for k in range(n):
        (tmp_path / f"s{k}.vnnlib").write_text(error_bound_v1(c - 0.1, c + 0.1, 0.3 + 0.001 * k, list(range(5)), 5))
        lines.append(f"t.onnx,s{k}.vnnlib,6")
    (tmp_path / "instances.csv").write_text("\n".join(lines) + "\n")
    return bench.read_instances(str(tmp_path / "instances.csv"))


def test_node_killed_mid_run_loses_nothing(cluster, tmp_path):
    c, workers = cluster
    rows = _slow_rows(tmp_path, 4)
    out = tmp_path / "run"
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("rows", bench.run_all(
        rows, 1, ["--no-milp"], progress=False, out_dir=str(out), ray_address=c.address)))
    t.start()
    time.sleep(4.0)  # both nodes busy with their first instance
    c.remove_node(workers[0], allow_graceful=False)
    c.add_node(num_cpus=1)  # somewhere for the lost task to go
    t.join(timeout=120)
    assert not t.is_alive()
    done = got["rows"]
    assert [r.verdict for r in done] == ["timeout"] * 4, [(r.verdict, r.message) for r in done]
    lines = (out / bench.JOURNAL).read_text().splitlines()
    assert len(lines) == 4  # each instance recorded once


def test_resume_skips_finished_rows(cluster, tmp_path):
    c, _ = cluster
    rows = _rows()
    out = tmp_path / "run"
    journal = bench.Journal(str(out))
    for r in rows[:2]:  # an earlier run finished these before it was interrupted
        journal.record(bench.Row(**{**r.__dict__, "verdict": "unsat", "node": "earlier", "time": 1.0}))
    done = bench.run_all(_rows(), 1, [], progress=False, out_dir=str(out), resume=True, ray_address=c.address)
    assert [r.node for r in done[:2]] == ["earlier", "earlier"]
    assert all(r.node.startswith("127.0.0.1/") for r in done[2:])
    assert [r.verdict for r in done[2:]] == ["sat", "sat"]
    assert len((out / bench.JOURNAL).read_text().splitlines()) == 4


def test_verify_on_ray_matches_enumeration(cluster, tmp_path, monkeypatch):
    """Tiny fixed-point twins (8 snapped inputs, 65,536 grid points): ε just above and below the
    enumerated maximum, decided with the DRA batches (branch and bound) and then with the MILP
    shares (no splitting) on the cluster's workers."""
    import numpy as np

    import models as M
    import vnncomp_qeb.portfolio as P
    from test_neighbourhood import N_IN, _case, _twin
    from vnncomp_qeb.io.replay import replay

    import vnncomp_qeb.cluster.remote_calls as rc

    c, _ = cluster
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    used = {"dra": 0, "milp": 0}
    rows, run_all = rc.RemoteDRA.rows, rc.run_remote_all
    monkeypatch.setattr(rc.RemoteDRA, "rows", lambda self, *a: used.__setitem__("dra", used["dra"] + 1) or rows(self, *a))
    monkeypatch.setattr(rc, "run_remote_all", lambda *a, **k: used.__setitem__("milp", used["milp"] + 1) or run_all(*a, **k))
    path = _twin(tmp_path / "t.onnx", 3, 4)
    k_lo = np.full(N_IN, -2.0)
    _, dom = _case(tmp_path, path, k_lo, 1.0)  # the faithful twin is exact: its evaluator is onnxruntime's
    top = float(np.abs(dom.graph.evaluate(M.grid_points(k_lo, k_lo + 3, 1.0).astype(np.float64))[:, 0]).max())
    for stage in ("branch-and-bound", "milp"):
        if stage == "milp":
            monkeypatch.setattr(P, "SPLIT_DIMS", 0)
            monkeypatch.setattr(P, "SPLIT_SHARE", 0.0)
        for eps, truth in ((top * 1.001, "unsat"), (top * 0.999, "sat")):
            inst, _ = _case(tmp_path, path, k_lo, eps)
            monkeypatch.setattr(P._Run, "falsify", lambda self: None)  # the cluster must decide it
            out = P.verify(inst, 40, log=lambda m: None, settings=P.Settings(ray=True))
            assert out.verdict == truth, (stage, eps, out)
            if truth == "sat":
                assert replay(inst, np.asarray(out.replay.x, dtype=np.float64)).ok
        assert used["dra" if stage == "branch-and-bound" else "milp"] > 0, used  # the workers did the work
