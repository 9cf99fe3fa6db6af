"""Command line: ``vnncomp-qeb verify | max-error | inspect | check | bounds | twin | spec | bench | supports``."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from vnncomp_qeb import __version__, allocator
from vnncomp_qeb.errors import QebError
from vnncomp_qeb.io.results import ERROR, SAT, write_result

# Seconds kept back from the budget: the verdict is written and the process gone before the
# harness's deadline.
SAFETY_MARGIN_S = 1.0


def _networks(args) -> dict[str, str] | str:
    from vnncomp_qeb.io.instance import parse_network_arg

    if args.network:
        out = {}
        for item in args.network:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise QebError(f"--network expects NAME=PATH, got {item!r}")
            out[name] = path
        return out
    listed = parse_network_arg(args.model)
    return listed if listed is not None else args.model


def _watch_parent(pid: int) -> None:
    """End this process group when process ``pid`` (the harness script) is gone: a script killed
    with SIGKILL cannot take its verifier down itself, and a late results file is worse than none."""
    import signal
    import threading

    import psutil

    def gone() -> bool:
        try:  # a killed script stays a zombie until its own parent reaps it: count that as gone
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False

    def watch():
        while not gone():
            time.sleep(0.2)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _query_form(args) -> None:
    """``CMD QUERY --network N=... [...]``: the one positional is the query (VNN-LIB 2.0 form)."""
    if args.network:
        if args.spec is not None:
            raise QebError("with --network give only the query file")
        args.spec, args.model = args.model, None
    if args.spec is None:
        raise QebError("give MODEL.onnx SPEC.vnnlib, or QUERY.vnnlib with --network NAME=PATH")


def cmd_verify(args) -> int:
    start = args.start_time if args.start_time is not None else time.time()
    if args.parent_pid:
        _watch_parent(args.parent_pid)
    if not args.timeout > 0:
        raise QebError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    _query_form(args)
    try:
        from vnncomp_qeb.io.instance import load_instance
        from vnncomp_qeb.portfolio import Settings, verify

        inst = load_instance(args.spec, _networks(args))
        budget = args.timeout - (time.time() - start) - SAFETY_MARGIN_S - 0.02 * args.timeout
        log = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
        settings = Settings(backend=args.backend, memory_mb=args.memory_mb, verbose=args.verbose,
                            milp=not args.no_milp, milp_workers=args.milp_workers, stream=not args.quiet,
                            ray=bool(args.ray))
        if args.ray:  # the connection's start-up counts against the budget
            from vnncomp_qeb.cluster.connect import ray_runtime

            with ray_runtime(args.ray):
                budget = args.timeout - (time.time() - start) - SAFETY_MARGIN_S - 0.02 * args.timeout
                outcome = verify(inst, budget, seed=args.seed, log=log, settings=settings)
        else:
            outcome = verify(inst, budget, seed=args.seed, log=log, settings=settings)
    except QebError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.results:
            write_result(args.results, ERROR)
        print(ERROR)
        return 2
    if args.results:
        write_result(args.results, outcome.verdict, outcome.witness)
    verdict = outcome.verdict
    if args.vnnlib2_words and verdict == "timeout":
        verdict = "timed-out"
    print(verdict)
    if outcome.verdict == SAT and outcome.witness:
        print(outcome.witness)
    elapsed = time.time() - start
    print(f"{outcome.verdict} by {outcome.stage or '-'} in {elapsed:.2f}s"
          f"{': ' + outcome.message if outcome.message else ''}", file=sys.stderr)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"verdict": outcome.verdict, "stage": outcome.stage, "message": outcome.message,
                       "time": elapsed, "stats": outcome.stats}, f)
    return 0


def cmd_inspect(args) -> int:
    """The IR of a model (or of each network of a pair, and the twin built from them)."""
    import numpy as np

    from vnncomp_qeb.io.instance import load_runnable
    from vnncomp_qeb.ir.compose import twin_graph
    from vnncomp_qeb.ir.twin import find_twins

    nets = _networks(args)
    graphs = {n: load_runnable(p, name=n) for n, p in nets.items()} if isinstance(nets, dict) else {
        os.path.basename(nets): load_runnable(nets)}
    for g in graphs.values():
        print(g.describe())
    if len(graphs) == 2:
        n, q = graphs.values()
        if n.input_size != q.input_size or n.output_size != q.output_size:
            print("the two networks differ in input or output size: no twin")
            return 0
        g = twin_graph(n, q, np.arange(n.input_size), n.input_size)
        print(f"as a pair, analysed as the twin {g.name} (input x of size {n.input_size})")
    twins = find_twins(g)
    if not twins:
        print("no twin: the graph is analysed as one network")
    for t in twins:
        print(t.describe())
    return 0


def cmd_check(args) -> int:
    """Replay the counterexample of a results file the way the organisers do."""
    from vnncomp_qeb.io.instance import load_instance
    from vnncomp_qeb.io.replay import input_type, replay
    from vnncomp_qeb.io.results import read_counterexample

    import numpy as np

    _query_form(args)
    inst = load_instance(args.spec, _networks(args))
    try:
        with open(args.results, encoding="utf-8") as f:
            verdict, _, body = f.read().partition("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise QebError(f"cannot read the results file ({exc})", path=args.results) from None
    if verdict.strip() != SAT:
        print(f"verdict is '{verdict.strip()}': nothing to replay")
        return 0
    x = read_counterexample(body, inst.spec)
    dtype = input_type(inst)
    x = np.asarray(x, dtype=dtype).astype(np.float64)  # cast first, as the organisers do
    if not any(c.in_box(x[None])[0] for c in inst.spec.cases):  # say where it leaves the nearest box
        case = min(inst.spec.cases, key=lambda c: float(np.max(np.maximum(c.lower - x, x - c.upper))))
        out = np.maximum(case.lower - x, x - case.upper)
        k = int(np.argmax(out))
        side = "below its lower bound" if x[k] < case.lower[k] else "above its upper bound"
        print(f"NOT confirmed: the input is outside the property's box: input {k} = {x[k]!r} is {out[k]:.6g} "
              f"{side} [{case.lower[k]!r}, {case.upper[k]!r}]" + (f" ({int(np.sum(out > 0))} inputs outside)"
                                                                  if np.sum(out > 0) > 1 else ""))
        return 1
    r = replay(inst, x)
    print(f"{'confirmed' if r.ok else 'NOT confirmed'}: margin {r.margin:.6g} (case {r.case})")
    return 0 if r.ok else 1


def cmd_bounds(args) -> int:
    """Sound bounds of every output (the difference N − Q on a twin) over each input box."""
    import numpy as np

    from vnncomp_qeb.analysis.dra import MODES, difference_bounds
    from vnncomp_qeb.io.instance import load_instance
    from vnncomp_qeb.ir.fuse import normalise

    _query_form(args)
    inst = load_instance(args.spec, _networks(args))
    graph = normalise(inst.graph)
    modes = MODES if args.mode == "all" else (args.mode,)
    for ci, case in enumerate(inst.cases):
        print(f"case {ci}: box of {case.lower.size} inputs")
        for mode in modes:
            t0 = time.perf_counter()
            lo, hi = difference_bounds(graph, case.lower[None], case.upper[None], mode)
            ms = (time.perf_counter() - t0) * 1000
            cells = "  ".join(f"y{j} [{a:.6g}, {b:.6g}]" for j, (a, b) in enumerate(zip(lo[0], hi[0])))
            print(f"  {mode:5s} {ms:8.1f} ms  max width {np.max(hi - lo):.6g}  {cells}")
    return 0


def cmd_twin(args) -> int:
    import onnx

    from vnncomp_qeb.io.twin_writer import build_twin

    onnx.save(build_twin(args.float_model, args.quant_model), args.output)
    print(f"wrote {args.output}")
    return 0


def _numbers(text: str, what: str = "value") -> list[float]:
    """Comma-separated numbers, or a .npy file / a text file holding them (separated by commas
    or white space)."""
    import re

    import numpy as np

    if os.path.isfile(text):
        if text.endswith(".npy"):
            try:
                return [float(v) for v in np.load(text, allow_pickle=False).ravel()]
            except (OSError, ValueError) as exc:
                raise QebError(f"cannot read the {what} array ({exc})", path=text) from None
        try:
            with open(text, encoding="utf-8-sig") as f:
                content = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise QebError(f"cannot read the {what} file ({exc})", path=text) from None
        items, source = [t for t in re.split(r"[,\s]+", content) if t], text
    else:
        items, source = [t.strip() for t in text.split(",") if t.strip()], None
    try:
        values = [float(t) for t in items]
    except ValueError as exc:
        raise QebError(f"expected numbers separated by commas or spaces for the {what} ({exc})", path=source) from None
    if not values or not all(np.isfinite(values)):
        raise QebError(f"the {what} must be finite numbers", path=source)
    return values


def _box(centre, radius: float):
    """``[c − r, c + r]`` in float64, each end moved inward where rounding put it outside the
    exact interval (a written box is never larger than asked)."""
    from fractions import Fraction

    import numpy as np

    lo, hi = centre - radius, centre + radius
    for k, c in enumerate(centre):
        if Fraction(float(lo[k])) < Fraction(float(c)) - Fraction(radius):
            lo[k] = np.nextafter(lo[k], np.inf)
        if Fraction(float(hi[k])) > Fraction(float(c)) + Fraction(radius):
            hi[k] = np.nextafter(hi[k], -np.inf)
    return lo, hi


def cmd_spec(args) -> int:
    """Write an error-bound property: L∞ box around a centre, |N − Q|_i < eps."""
    import numpy as np

    from vnncomp_qeb.io.vnnlib_writer import error_bound_v1, error_bound_v2

    if not (np.isfinite(args.radius) and args.radius >= 0):
        raise QebError(f"--radius must be a finite number ≥ 0, got {args.radius:g}")
    if not (np.isfinite(args.eps) and args.eps > 0):
        raise QebError(f"--eps must be a finite number > 0, got {args.eps:g}")
    centre = np.array(_numbers(args.center, "centre"), dtype=np.float64)
    in_shape, out_shape = [1, centre.size], None
    if args.model:
        in_shape, out_shape = _model_shapes(args.model)
        if int(np.prod(in_shape)) != centre.size:
            raise QebError(f"the centre has {centre.size} values but the model's input {in_shape} has "
                           f"{int(np.prod(in_shape))}", path=args.model)
    n_out = args.n_outputs if args.n_outputs is not None else (int(np.prod(out_shape)) if out_shape else None)
    if n_out is None or n_out < 1:
        raise QebError("give --n-outputs N (or --model MODEL.onnx to take it from the model)")
    if out_shape is None or int(np.prod(out_shape)) != n_out:
        out_shape = [1, n_out]
    lo, hi = _box(centre, args.radius)
    if args.clip:
        clip = _numbers(args.clip, "clip range")
        if len(clip) != 2 or clip[0] > clip[1]:
            raise QebError(f"--clip expects lo,hi with lo ≤ hi, got {args.clip}")
        lo, hi = np.clip(lo, clip[0], clip[1]), np.clip(hi, clip[0], clip[1])
    outputs = [int(v) for v in _numbers(args.outputs, "output indices")] if args.outputs else list(range(n_out))
    if any(o < 0 or o >= n_out for o in outputs):
        raise QebError(f"--outputs must lie in 0..{n_out - 1}")
    if args.vnnlib_version == "2":
        text = error_bound_v2(lo, hi, args.eps, outputs, in_shape, out_shape)
    else:
        text = error_bound_v1(lo, hi, args.eps, outputs, n_out)
    try:
        with open(args.output, "w") as f:
            f.write(text)
    except OSError as exc:
        raise QebError(f"cannot write ({exc.strerror or exc})", path=args.output) from None
    print(f"wrote {args.output}")
    return 0


def _model_shapes(path: str) -> tuple[list[int], list[int]]:
    """Input and output shape of a model (a free batch dimension taken as 1)."""
    from vnncomp_qeb.io.ort_session import session

    from vnncomp_qeb.io.onnx_loader import read_model

    read_model(path)  # clear errors for a missing or malformed file
    sess = session(path)
    fix = lambda dims: [d if isinstance(d, int) and d > 0 else 1 for d in dims]  # noqa: E731
    return fix(sess.get_inputs()[0].shape), fix(sess.get_outputs()[0].shape)


def cmd_max_error(args) -> int:
    """Certified interval of max |N − Q| over the property's region (or a centre and radius)."""
    import json
    import tempfile

    import numpy as np

    from vnncomp_qeb.io.instance import load_instance
    from vnncomp_qeb.max_error import max_error

    with tempfile.TemporaryDirectory(prefix="qeb-max-error-") as tmp:
        if args.center is not None:  # FLOAT.onnx QUANT.onnx --center … --radius …
            if args.spec is None or args.network:
                raise QebError("with --center give the two models: max-error FLOAT.onnx QUANT.onnx --center … --radius …")
            from vnncomp_qeb.io.vnnlib_writer import error_bound_v2

            in_shape, out_shape = _model_shapes(args.model)
            centre = np.array(_numbers(args.center, "centre"), dtype=np.float64)
            if centre.size != int(np.prod(in_shape)):
                raise QebError(f"the centre has {centre.size} values, the model's input {in_shape}")
            if args.radius is None or not args.radius >= 0:
                raise QebError("--radius must be given and ≥ 0")
            lo, hi = _box(centre, args.radius)
            n_out = int(np.prod(out_shape))
            outs = [int(v) for v in _numbers(args.outputs, "output indices")] if args.outputs else list(range(n_out))
            spec = os.path.join(tmp, "region.vnnlib")
            with open(spec, "w") as f:
                f.write(error_bound_v2(lo, hi, 1.0, outs, in_shape, out_shape))
            inst = load_instance(spec, {"N": args.model, "Q": args.spec})
        else:
            _query_form(args)
            inst = load_instance(args.spec, _networks(args))
        log = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
        r = max_error(inst, args.timeout, seed=args.seed, log=log)
    if args.json:  # files first: a reader that stops early (| head) must not lose them
        with open(args.json, "w") as f:
            json.dump(r.to_json(), f, indent=1)
    if args.plot:
        _plot_interval(r, args.plot)
    closed = "closed" if r.upper <= r.lower else f"gap {r.upper - r.lower:.6g}"
    print(f"max |N − Q| in [{r.lower:.9g}, {r.upper:.9g}] ({closed}, {r.time:.2f}s, {r.boxes} boxes)")
    for i, (lo, hi) in sorted(r.outputs.items()):
        print(f"  output {i}: [{lo:.9g}, {hi:.9g}]")
    if r.witness is not None:
        print("attained at x = " + np.array2string(r.witness.astype(np.float64), precision=9, threshold=20,
                                                   separator=", "))
    return 0


def _plot_interval(r, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [h[0] for h in r.history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.step(t, [h[1] for h in r.history], where="post", label="lower (attained, onnxruntime)")
    ax.step(t, [h[2] for h in r.history], where="post", label="upper (certified)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("max |N − Q|")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_bench(args) -> int:
    """Run a benchmark's instances; write results, a summary, a cactus plot, a comparison."""
    import json

    from vnncomp_qeb import bench

    rows = bench.read_instances(args.instances, args.timeout, args.match)
    if args.limit:
        rows = rows[: args.limit]
    if not rows:
        raise QebError(f"{args.instances}: no instances")
    if args.resume and args.out and os.path.abspath(args.resume) != os.path.abspath(args.out):
        raise QebError("--resume DIR continues the run in DIR: give no other --out")
    out_dir = args.resume or args.out or os.path.join("bench-results", time.strftime("%Y%m%d-%H%M%S"))
    if args.resume and not os.path.exists(os.path.join(args.resume, bench.JOURNAL)):
        raise QebError(f"nothing to resume: no {bench.JOURNAL} in {args.resume}")
    extra = ["--no-milp"] if args.no_milp else []
    extra += ["--backend", args.backend]
    rows = bench.run_all(rows, args.jobs, extra, progress=not args.no_progress, out_dir=out_dir,
                         resume=bool(args.resume), ray_address=args.ray, cores_per_instance=args.cores_per_instance)
    bench.write(rows, out_dir)
    text = bench.summary(rows)
    runs = {"this run": rows}
    if args.compare:
        with open(args.compare) as f:
            previous = json.load(f)
        text += "\n\n" + bench.compare(rows, previous)
        runs["earlier run"] = [bench.Row(**p) for p in previous]
    bench.cactus(runs, os.path.join(out_dir, "cactus.png"))
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"results in {out_dir}/ (results.csv, results.json, summary.txt, cactus.png)")
    return 0


def supported_operators() -> list[str]:
    """ONNX operators the loader reads (its handler registry, and the ops that only ever see
    constants, which it folds)."""
    from vnncomp_qeb.io.onnx_context import HANDLERS
    from vnncomp_qeb.io.onnx_loader import CONSTANT_ONLY

    return sorted({name.split(".")[-1] for name in HANDLERS} | set(CONSTANT_ONLY))


def cmd_supports(args) -> int:
    """What the verifier accepts, in the form of the VNN-LIB 2.0 tool interface."""
    if args.onnx_operators:
        print("\n".join(supported_operators()))
    if args.vnnlib_versions:
        print("1.0\n2.0")
    if args.verdicts:
        print("sat\nunsat\ntimeout\nunknown\nerror")
    if args.multiple_network_theories:  # one network; several (separate or tied (==) inputs);
        print("SNET\nMNET\nMENET\nMINET")  # equal-to; isomorphic-to (also at float16)
    if args.hidden_node_theories:  # no hidden variables; hidden variables observed as outputs
        print("NH\nH")
    if args.multiple_input_output_theories:  # several input and output tensors per network
        print("SIO\nMIO")
    if args.arithmetic_complexity_theories:  # bounds, linear output constraints, linear
        print("BND\nOUTC\nLIN\nPOLY")  # constraints over inputs, outputs and hidden values together,
        # polynomials of them (each product observed through interval and McCormick bounds)
    flags = (args.onnx_operators, args.vnnlib_versions, args.verdicts, args.multiple_network_theories,
             args.hidden_node_theories, args.multiple_input_output_theories, args.arithmetic_complexity_theories)
    if not any(flags):
        print("onnx operators: " + ", ".join(supported_operators()))
        print("vnnlib versions: 1.0, 2.0 (several networks, equalities between inputs)")
        print("verdicts: sat (with a replayed witness), unsat, timeout, unknown, error")
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vnncomp-qeb", description=__doc__)
    p.add_argument("--version", action="version", version=f"vnncomp-qeb {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="decide a property: sat / unsat / timeout / unknown / error")
    v.add_argument("model", help="ONNX model (or a list literal of (name, path)), or with --network the query")
    v.add_argument("spec", nargs="?", help="VNN-LIB property (1.0 or 2.0)")
    v.add_argument("--network", action="append", metavar="NAME=PATH", help="network of a 2.0 query")
    v.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    v.add_argument("--results", help="write the verdict and counterexample to this file")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--start-time", type=float, help="epoch seconds the budget started (harness use)")
    v.add_argument("--vnnlib2-words", action="store_true", help="print 'timed-out' as VNN-LIB 2.0 tools do")
    v.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    v.add_argument("--verbose", action="store_true", help="every solver call on stderr")
    v.add_argument("--backend", default="highs", choices=["highs", "scip", "gurobi"],
                   help="MILP solver tried first (default highs; others are fallbacks when installed)")
    v.add_argument("--memory-mb", type=_positive_float, help="memory cap of the MILP process (default: 75%% of free memory)")
    v.add_argument("--no-milp", action="store_true", help="bounds and branch and bound only")
    v.add_argument("--milp-workers", type=_positive_int, metavar="N",
                   help="MILP solver processes at once (default: one per usable core)")
    v.add_argument("--json", help="also write verdict, deciding stage, message and statistics to this JSON file")
    v.add_argument("--category", default="", help="benchmark category (harness use; informational)")
    v.add_argument("--parent-pid", type=int, help="end when this process (the harness script) is gone")
    v.add_argument("--ray", metavar="ADDRESS", help="spread the MILP shares and branch-and-bound batches over a "
                   "Ray cluster: 'local', 'auto' or HOST:PORT (the harness scripts never use it)")
    v.set_defaults(func=cmd_verify)

    i = sub.add_parser("inspect", help="print the IR of a model and its twin pairing")
    i.add_argument("model", nargs="?", help="ONNX model (.onnx or .onnx.gz), or a list literal of (name, path)")
    i.add_argument("--network", action="append", metavar="NAME=PATH", help="one network of a pair (give two)")
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser("check", help="replay a results file's counterexample with onnxruntime")
    c.add_argument("model", help="ONNX model (or a list literal of (name, path)); with --network the query")
    c.add_argument("spec", nargs="?", help="VNN-LIB property (1.0 or 2.0)")
    c.add_argument("results", help="results file: verdict on line 1, counterexample after 'sat'")
    c.add_argument("--network", action="append", metavar="NAME=PATH", help="network of a 2.0 query")
    c.set_defaults(func=cmd_check)

    t = sub.add_parser("twin", help="write the difference model N(X) - Q(X) of two ONNX files")
    t.add_argument("float_model", help="the float network N (ONNX)")
    t.add_argument("quant_model", help="its quantized (or float16) version Q (ONNX)")
    t.add_argument("-o", "--output", required=True, help="where to write the twin (ONNX)")
    t.set_defaults(func=cmd_twin)

    b = sub.add_parser("bounds", help="print sound bounds of the outputs (N - Q on a twin) over the property's boxes")
    b.add_argument("model", help="ONNX model (or a list literal of (name, path)); with --network the query")
    b.add_argument("spec", nargs="?", help="VNN-LIB property (1.0 or 2.0): its input boxes are bounded")
    b.add_argument("--network", action="append", metavar="NAME=PATH", help="network of a 2.0 query")
    b.add_argument("--mode", default="best", choices=["base", "con", "sym", "joint", "diff", "best", "all"])
    b.set_defaults(func=cmd_bounds)

    s = sub.add_parser("spec", help="write an error-bound property |N(x)_i - Q(x)_i| < eps over an L-inf box")
    s.add_argument("--center", required=True, help="comma-separated values, or a .npy file, or a text file "
                   "of numbers separated by commas or spaces")
    s.add_argument("--radius", type=float, required=True, help="L-inf radius of the box (≥ 0)")
    s.add_argument("--eps", type=float, required=True, help="the error bound (> 0)")
    s.add_argument("--n-outputs", type=int, help="number of network outputs (default: the --model's)")
    s.add_argument("--model", help="an ONNX model of the pair: the 2.0 declarations take its input and "
                   "output shapes")
    s.add_argument("--outputs", help="comma-separated output indices to bound (default: all)")
    s.add_argument("--clip", help="lo,hi: clip the box to this range (write --clip=-1,1 for a negative lo)")
    s.add_argument("--vnnlib-version", choices=["1", "2"], default="1",
                   help="1: difference model Y = N - Q; 2: two networks N and Q, inputs tied")
    s.add_argument("-o", "--output", required=True, help="the VNN-LIB file to write")
    s.set_defaults(func=cmd_spec)

    x = sub.add_parser("max-error", help="certified interval [lower, upper] of max |N - Q| over a region, anytime")
    x.add_argument("model", help="ONNX difference model, or the float model N with --center, or with --network "
                   "the query")
    x.add_argument("spec", nargs="?", help="VNN-LIB error-bound property (its region and outputs; eps is ignored), "
                   "or the quantized model Q with --center")
    x.add_argument("--network", action="append", metavar="NAME=PATH", help="network of a 2.0 query")
    x.add_argument("--center", help="with FLOAT.onnx QUANT.onnx: the centre of an L-inf box (values or a file)")
    x.add_argument("--radius", type=float, help="with --center: the box's radius")
    x.add_argument("--outputs", help="with --center: output indices (default: all)")
    x.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds (default 60): the answer is the "
                   "best interval by then")
    x.add_argument("--json", help="write lower, upper, witness, time, per-output intervals and the history")
    x.add_argument("--plot", metavar="FILE.png", help="plot the interval over time")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    x.set_defaults(func=cmd_max_error)

    r = sub.add_parser("bench", help="run a benchmark's instances.csv: results, summary, cactus plot, comparison")
    r.add_argument("instances", help="instances.csv (model,spec,timeout per line, paths relative to it)")
    r.add_argument("--timeout", type=float, help="seconds per instance (default: the CSV's)")
    r.add_argument("--jobs", type=int, default=1, help="instances run at once (default 1)")
    r.add_argument("--out", help="folder for the results (default bench-results/<time>)")
    r.add_argument("--compare", metavar="RESULTS.json", help="an earlier run's results.json to compare against")
    r.add_argument("--match", default="", help="only instances whose model or spec path contains this")
    r.add_argument("--limit", type=int, help="only the first N instances")
    r.add_argument("--backend", default="highs", choices=["highs", "scip", "gurobi"])
    r.add_argument("--no-milp", action="store_true")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--ray", metavar="ADDRESS", help="run the instances as Ray tasks: 'local' (a Ray runtime for "
                   "this run), 'auto' (a running cluster) or HOST:PORT; model and spec paths must be readable "
                   "on every node")
    r.add_argument("--cores-per-instance", type=_positive_int, default=1, metavar="N",
                   help="with --ray: CPUs each instance's task asks for (its MILP processes; default 1)")
    r.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR: instances its journal "
                   "holds are not run again")
    r.set_defaults(func=cmd_bench)

    u = sub.add_parser("supports", help="what the tool supports (VNN-LIB 2.0 tool interface)")
    u.add_argument("--onnx-operators", action="store_true", help="ONNX operators, one per line")
    u.add_argument("--vnnlib-versions", action="store_true")
    u.add_argument("--verdicts", action="store_true")
    u.add_argument("--multiple-network-theories", action="store_true")
    u.add_argument("--hidden-node-theories", action="store_true")
    u.add_argument("--multiple-input-output-theories", action="store_true")
    u.add_argument("--arithmetic-complexity-theories", action="store_true")
    u.set_defaults(func=cmd_supports)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    allocator.tune()
    try:
        return args.func(args)
    except QebError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (e.g. `| head`): not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception:  # a bug: say so, never a verdict
        traceback.print_exc()
        results = getattr(args, "results", None)
        if results and not os.path.exists(results):
            try:
                write_result(results, ERROR)
            except QebError as exc:
                print(f"error: {exc}", file=sys.stderr)
        return 3
