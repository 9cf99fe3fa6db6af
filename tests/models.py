"""Builders of small real ONNX models for the tests (onnx.helper + onnxruntime.quantization)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

IR_VERSION = 8  # onnx writes a newer IR than the pinned onnxruntime reads


def save(nodes, inits, path, n_in, n_out, elem=T.FLOAT, opset=13, extra_opsets=()):
    graph = h.make_graph(nodes, "test", [h.make_tensor_value_info("x", elem, ["N", n_in])],
                         [h.make_tensor_value_info("y", elem, ["N", n_out])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset), *extra_opsets],
                         ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def random_layers(sizes, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [((rng.normal(size=(a, b)) / np.sqrt(a)).astype(dtype), (rng.normal(size=b) * 0.1).astype(dtype))
            for a, b in zip(sizes[:-1], sizes[1:])]


def float_mlp(path, sizes=(4, 8, 8, 3), seed=0, gemm=True):
    """ReLU MLP as Gemm layers (weights transposed, transB=1) or MatMul + Add."""
    nodes, inits, cur = [], [], "x"
    layers = random_layers(sizes, seed)
    for i, (W, b) in enumerate(layers):
        out = "y" if i == len(layers) - 1 else f"h{i}"
        pre = out if i == len(layers) - 1 else f"a{i}"
        if gemm:
            inits += [nh.from_array(np.ascontiguousarray(W.T), f"W{i}"), nh.from_array(b, f"b{i}")]
            nodes.append(h.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [pre], transB=1))
        else:
            inits += [nh.from_array(W, f"W{i}"), nh.from_array(b, f"b{i}")]
            nodes.append(h.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"]))
            nodes.append(h.make_node("Add", [f"m{i}", f"b{i}"], [pre]))
        if i < len(layers) - 1:
            nodes.append(h.make_node("Relu", [pre], [out]))
        cur = out
    return save(nodes, inits, path, sizes[0], sizes[-1])


def quantize(float_path, out_path, fmt="QDQ", per_channel=False, n_in=4, seed=0, low=-1.0, high=1.0,
             activation="QInt8", weight="QInt8", shape=None):
    """int8 (or other integer type) model written by onnxruntime.quantization.quantize_static;
    calibration inputs of per-sample ``shape`` (default ``(n_in,)``)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(seed)

    class Reader(CalibrationDataReader):
        def __init__(self):
            size = (1,) + tuple(shape or (n_in,))
            self.it = iter([{"x": rng.uniform(low, high, size=size).astype(np.float32)} for _ in range(64)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(float_path), str(out_path), Reader(),
                    quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                    per_channel=per_channel, activation_type=QuantType[activation], weight_type=QuantType[weight])
    return str(out_path)


def _qdq(nodes, inits, x, name, scale, zp=0, dtype=np.int8):
    inits += [nh.from_array(np.array(scale, dtype=np.float32), f"{name}_s"),
              nh.from_array(np.array(zp, dtype=dtype), f"{name}_z")]
    nodes.append(h.make_node("QuantizeLinear", [x, f"{name}_s", f"{name}_z"], [f"{name}_q"]))
    nodes.append(h.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"]))
    return f"{name}_dq"


def pow2_qdq_mlp(path, sizes=(3, 6, 6, 2), seed=0, act_scale=2.0**-4, w_scale=2.0**-6, snap_input=True):
    """QDQ MLP whose scales are all powers of two: every semantics coincides exactly."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = _qdq(nodes, inits, "x", "in", act_scale) if snap_input else "x"
    n_layers = len(sizes) - 1
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        Wq = rng.integers(-100, 101, size=(a, b)).astype(np.int8)
        inits += [nh.from_array(Wq, f"W{i}_q"), nh.from_array(np.array(w_scale, np.float32), f"W{i}_s"),
                  nh.from_array(np.array(0, np.int8), f"W{i}_z"),
                  nh.from_array((rng.integers(-64, 65, size=b) * act_scale * w_scale).astype(np.float32), f"b{i}")]
        nodes.append(h.make_node("DequantizeLinear", [f"W{i}_q", f"W{i}_s", f"W{i}_z"], [f"W{i}"]))
        nodes.append(h.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"]))
        nodes.append(h.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]))
        cur = f"a{i}"
        if i < n_layers - 1:
            nodes.append(h.make_node("Relu", [cur], [f"r{i}"]))
            cur = _qdq(nodes, inits, f"r{i}", f"act{i}", act_scale)
    cur = _qdq(nodes, inits, cur, "out", act_scale * 2)
    nodes.append(h.make_node("Identity", [cur], ["y"]))
    return save(nodes, inits, path, sizes[0], sizes[-1])


def fake_quant_chain_f64(path, sizes=(3, 5, 2), seed=0, frac_bits=4):
    """float64 fixed-point net from standard ops: Mul, Round/Floor, Clip, Div, dyadic weights."""
    rng = np.random.default_rng(seed)
    k = float(2**frac_bits)
    nodes = [h.make_node("Mul", ["x", "k"], ["xs"]), h.make_node("Round", ["xs"], ["xr"]),
             h.make_node("Clip", ["xr", "lo", "hi"], ["xc"]), h.make_node("Div", ["xc", "k"], ["a_in"])]
    inits = [nh.from_array(np.array(k), "k"), nh.from_array(np.array(-8.0 * k), "lo"),
             nh.from_array(np.array(8.0 * k - 1), "hi")]
    cur = "a_in"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [nh.from_array(rng.integers(-16, 17, size=(a, b)) / k, f"W{i}"),
                  nh.from_array(rng.integers(-16, 17, size=b) / k, f"b{i}")]
        nodes += [h.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"]), h.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"])]
        cur = f"z{i}"
        if i < len(sizes) - 2:  # hidden: floor(z·k + 0.5) clamped to [0, 2^Q - 1], back to real
            nodes += [h.make_node("Mul", [cur, "k"], [f"s{i}"]), h.make_node("Add", [f"s{i}", "half"], [f"t{i}"]),
                      h.make_node("Floor", [f"t{i}"], [f"f{i}"]), h.make_node("Clip", [f"f{i}", "zero", "hi"], [f"c{i}"]),
                      h.make_node("Div", [f"c{i}", "k"], [f"q{i}"])]
            cur = f"q{i}"
    inits += [nh.from_array(np.array(0.5), "half"), nh.from_array(np.array(0.0), "zero")]
    nodes.append(h.make_node("Identity", [cur], ["y"]))
    return save(nodes, inits, path, sizes[0], sizes[-1], elem=T.DOUBLE)


def matmul_integer_model(path, n_in=4, n_out=3, seed=0):
    """QuantizeLinear(uint8) → MatMulInteger → Cast → Mul(scale) → Add(bias) → Relu."""
    rng = np.random.default_rng(seed)
    s_x, s_w = np.float32(0.02), np.float32(0.01)
    B = rng.integers(-60, 61, size=(n_in, n_out)).astype(np.int8)
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             h.make_node("MatMulInteger", ["xq", "B", "zx", "zb"], ["acc"]),
             h.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT),
             h.make_node("Mul", ["accf", "sxw"], ["mm"]),
             h.make_node("Add", ["mm", "bias"], ["pre"]),
             h.make_node("Relu", ["pre"], ["y"])]
    inits = [nh.from_array(np.array(s_x), "sx"), nh.from_array(np.array(128, np.uint8), "zx"),
             nh.from_array(B, "B"), nh.from_array(np.array(0, np.int8), "zb"),
             nh.from_array(np.array(s_x * s_w, np.float32), "sxw"),
             nh.from_array((rng.normal(size=n_out) * 0.1).astype(np.float32), "bias")]
    return save(nodes, inits, path, n_in, n_out, opset=13)


def unsupported_model(path):
    """A model with an operator the IR does not model (Erf)."""
    nodes = [h.make_node("MatMul", ["x", "W"], ["m"]), h.make_node("Erf", ["m"], ["y"], name="squash")]
    return save(nodes, [nh.from_array(np.eye(3, dtype=np.float32), "W")], path, 3, 3)


def snapped_twin(float_path, quant_path, out_path, scale, swap=False, extra_output=False):
    """Difference model whose input is first snapped to the grid ``scale·k`` (shared by both
    branches), so exhaustive enumeration of the grid is exact ground truth."""
    from vnncomp_qeb.io.twin_writer import build_twin

    m = build_twin(str(float_path), str(quant_path))
    g = m.graph
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] == "X":
            node.input[0] = "X_snapped"
        if node.name == "difference" and swap:
            node.input[0], node.input[1] = node.input[1], node.input[0]
    g.initializer.extend([nh.from_array(np.array(scale, np.float32), "snap_s"),
                          nh.from_array(np.array(0, np.int8), "snap_z")])
    snap = [h.make_node("QuantizeLinear", ["X", "snap_s", "snap_z"], ["X_code"], name="snap_q"),
            h.make_node("DequantizeLinear", ["X_code", "snap_s", "snap_z"], ["X_snapped"], name="snap_dq")]
    for i, node in enumerate(snap):
        g.node.insert(i, node)
    if extra_output:  # Y = Concat(N - Q, N): extra outputs next to the difference
        diff = next(n for n in g.node if n.name == "difference")
        diff.output[0] = "D"
        g.node.append(h.make_node("Concat", ["D", diff.input[1] if swap else diff.input[0]], ["Y"], axis=1))
        g.output[0].type.tensor_type.shape.dim[1].dim_value *= 2
    onnx.checker.check_model(m)
    onnx.save(m, str(out_path))
    return str(out_path)


def grid_points(k_lo, k_hi, scale):
    """Every grid point ``scale·k`` with k_lo ≤ k ≤ k_hi (per dimension), float32."""
    axes = [np.arange(a, b + 1) for a, b in zip(k_lo, k_hi)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    return (mesh * scale).astype(np.float32)


def many_ops_f64(path):
    """float64 model using Constant, Reshape, Ceil, Cast (float→int32→float), Concat of two
    branches, constant − variable, Div, Clip and Flatten: every value exactly representable."""
    nodes = [
        h.make_node("Constant", [], ["shape"], value=nh.from_array(np.array([-1, 2, 2], np.int64))),
        h.make_node("Mul", ["x", "k"], ["xk"]),
        h.make_node("Ceil", ["xk"], ["c"]),
        h.make_node("Cast", ["xk"], ["xi"], to=T.INT32),  # truncation toward zero
        h.make_node("Cast", ["xi"], ["xt"], to=T.DOUBLE),
        h.make_node("Sub", ["one", "xt"], ["neg"]),  # constant − variable
        h.make_node("Concat", ["c", "neg"], ["cat"], axis=1),
        h.make_node("Reshape", ["cat", "shape"], ["r"]),
        h.make_node("Flatten", ["r"], ["flat"], axis=1),
        h.make_node("Div", ["flat", "k"], ["d"]),
        h.make_node("Clip", ["d", "lo", "hi"], ["y"]),
    ]
    inits = [nh.from_array(np.array(8.0), "k"), nh.from_array(np.array(1.0), "one"),
             nh.from_array(np.array(-0.5), "lo"), nh.from_array(np.array(0.75), "hi")]
    return save(nodes, inits, path, 2, 4, elem=T.DOUBLE)


def float16_mlp(path, sizes=(4, 16, 16, 3), seed=0):
    """A ReLU MLP that computes in float16 (weights, activations and input)."""
    nodes, inits, cur = [], [], "x"
    layers = random_layers(sizes, seed, dtype=np.float16)
    for i, (W, b) in enumerate(layers):
        inits += [nh.from_array(W, f"W{i}"), nh.from_array(b, f"b{i}")]
        nodes += [h.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"]), h.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"])]
        cur = f"z{i}"
        if i < len(layers) - 1:
            nodes.append(h.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    nodes.append(h.make_node("Identity", [cur], ["y"]))
    return save(nodes, inits, path, sizes[0], sizes[-1], elem=T.FLOAT16)


def gemm_mlp(path, sizes, seed=0, weight_scale=1.0, opset=17):
    """A ReLU MLP of Gemm layers (``y = x·W + b``), input ``X`` and output ``Y`` with a free batch
    axis, as sklearn's or a hand export writes it: weights N(0, 1/fan-in)·weight_scale."""
    rng = np.random.default_rng(seed)
    nodes, inits, cur = [], [], "X"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [nh.from_array((rng.normal(size=(a, b)) / np.sqrt(a) * weight_scale).astype(np.float32), f"W{i}"),
                  nh.from_array((rng.normal(size=b) * 0.1).astype(np.float32), f"B{i}")]
        out = "Y" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(h.make_node("Gemm", [cur, f"W{i}", f"B{i}"], [out]))
        cur = out
        if out != "Y":
            nodes.append(h.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    graph = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("X", T.FLOAT, ["N", sizes[0]])],
                         [h.make_tensor_value_info("Y", T.FLOAT, ["N", sizes[-1]])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.save(model, str(path))
    return model


def cnn(path, channels=1, hw=(6, 6), seed=0, batch_norm=True, pool="avg"):
    """A small CNN as exporters write it: Conv (padded) → BatchNormalization → Relu → Conv
    (strided, 2 groups) → Relu → AveragePool (or MaxPool) → Flatten → Gemm; input ``x``
    (N, C, H, W)."""
    rng = np.random.default_rng(seed)
    H, W = hw
    K1 = (rng.normal(size=(4, channels, 3, 3)) / 3).astype(np.float32)
    K2 = (rng.normal(size=(4, 2, 2, 2)) / 2).astype(np.float32)
    h2, w2 = (H + 2 - 3 + 1 - 2) // 2 + 1, (W + 2 - 3 + 1 - 2) // 2 + 1
    n_flat = 4 * (h2 - 1) * (w2 - 1)
    arrays = {"K1": K1, "b1": (rng.normal(size=4) * 0.1).astype(np.float32), "K2": K2,
              "b2": (rng.normal(size=4) * 0.1).astype(np.float32),
              "Wf": (rng.normal(size=(n_flat, 2)) / np.sqrt(n_flat)).astype(np.float32),
              "bf": (rng.normal(size=2) * 0.1).astype(np.float32),
              "g": rng.uniform(0.5, 1.5, 4).astype(np.float32), "beta": (rng.normal(size=4) * 0.1).astype(np.float32),
              "mu": (rng.normal(size=4) * 0.1).astype(np.float32), "var": rng.uniform(0.5, 2, 4).astype(np.float32)}
    nodes = [h.make_node("Conv", ["x", "K1", "b1"], ["c1"], pads=[1, 1, 1, 1])]
    if batch_norm:
        nodes.append(h.make_node("BatchNormalization", ["c1", "g", "beta", "mu", "var"], ["n1"]))
    nodes += [h.make_node("Relu", ["n1" if batch_norm else "c1"], ["r1"]),
              h.make_node("Conv", ["r1", "K2", "b2"], ["c2"], strides=[2, 2], group=2),
              h.make_node("Relu", ["c2"], ["r2"]),
              h.make_node("AveragePool" if pool == "avg" else "MaxPool", ["r2"], ["p"], kernel_shape=[2, 2],
                          strides=[1, 1]),
              h.make_node("Flatten", ["p"], ["f"]), h.make_node("Gemm", ["f", "Wf", "bf"], ["y"])]
    graph = h.make_graph(nodes, "cnn", [h.make_tensor_value_info("x", T.FLOAT, ["N", channels, H, W])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 2])],
                         [nh.from_array(a, n) for n, a in arrays.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)
