"""State shared by the ONNX node handlers while a model is turned into IR ops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from vnncomp_qeb.errors import ModelError, UnsupportedOperator
from vnncomp_qeb.ir import ops

# ONNX TensorProto data type → integer range (the types a quantized tensor may have).
INT_RANGES = {
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT16: (0, 65535),
    onnx.TensorProto.INT16: (-32768, 32767),
    onnx.TensorProto.INT32: (-(2**31), 2**31 - 1),
    onnx.TensorProto.UINT32: (0, 2**32 - 1),
    onnx.TensorProto.INT64: (-(2**63), 2**63 - 1),
    onnx.TensorProto.UINT4: (0, 15),
    onnx.TensorProto.INT4: (-8, 7),
}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}
PRECISION_OF = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64",
                onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}


class BatchAxisCrossed(UnsupportedOperator):
    """A node mixes elements across what the loader took as the batch axis (a fixed leading 1):
    the model is then read again with that axis as part of the one sample."""


@dataclass
class QTag:
    """An integer ONNX tensor ``q`` represented in the IR by its real value ``s·(q − z)``."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: float
    qmax: float


Handler = Callable[["LoadContext", onnx.NodeProto], None]
HANDLERS: dict[str, Handler] = {}


def handles(*op_types: str) -> Callable[[Handler], Handler]:
    """Register a handler for ONNX operator types (``com.microsoft.X`` for that domain)."""

    def register(fn: Handler) -> Handler:
        for t in op_types:
            HANDLERS[t] = fn
        return fn

    return register


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's Python value, or ``default`` when the node does not set it."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class LoadContext:
    """Constants, aliases, integer tags and the ops emitted so far."""

    def __init__(self, path: str):
        self.path = path
        self.constants: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        self.tags: dict[str, QTag] = {}  # keyed by ONNX tensor name: integer tensors only
        self.dynamic: dict = {}  # ONNX name → DynValue: tensors scaled by a runtime quantization scale
        self.samples: dict[str, np.ndarray] = {}  # one zero sample per variable: gives shapes
        self.ops: list[ops.Op] = []
        self.node: onnx.NodeProto | None = None
        self.types: dict[str, int] = {}  # ONNX element type of every tensor shape inference typed
        # ONNX per-sample shape of tensors the IR holds flat (a convolution's (C, H, W) output)
        self.logical: dict[str, tuple[int, ...]] = {}
        # the model's input has no batch axis (rank 1, or a fixed first dimension other than 1):
        # the IR adds one, and axes in attributes count from the model's own first axis
        self.batchless = False
        self.input_name = ""  # the graph's one variable input
        self.default_precision = "float32"
        self.precision = "float32"  # of the node being translated
        self.opset = 13  # of the default domain
        self._fresh = 0

    # -- naming ------------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def is_const(self, name: str) -> bool:
        return self.resolve(name) in self.constants

    def is_var(self, name: str) -> bool:
        return self.resolve(name) in self.samples

    def const(self, name: str) -> np.ndarray:
        name = self.resolve(name)
        if name not in self.constants:
            raise self.unsupported(f"input '{name}' must be a constant (initializer)")
        return self.constants[name]

    def const_f64(self, name: str) -> np.ndarray:
        return np.asarray(self.const(name), dtype=np.float64)

    def var(self, name: str) -> str:
        name = self.resolve(name)
        if name not in self.samples:
            if name in self.constants:
                raise self.unsupported(f"input '{name}' is a constant where a variable tensor is expected")
            raise ModelError(f"node {self.where()}: tensor '{name}' is not defined before use", path=self.path)
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        """Per-sample shape of a variable tensor as the IR holds it."""
        return tuple(self.samples[self.var(name)].shape[1:])

    def logical_shape(self, name: str) -> tuple[int, ...]:
        """Per-sample shape of a variable tensor as the ONNX graph has it (the IR may hold a
        convolution's output flat)."""
        return self.logical.get(self.var(name), self.shape(name))

    def fresh(self, base: str) -> str:
        self._fresh += 1
        return f"{base}__{self._fresh}"

    # -- emission ----------------------------------------------------------------------------
    def emit(self, op: ops.Op, tag: QTag | None = None) -> str:
        """Append ``op``; its output shape is found by running it on zero samples. ``tag`` marks
        the op's output, which is then also the node's ONNX output, as an integer tensor."""
        op.source = op.source or self.where()
        op.precision = self.precision
        try:
            out = op.forward(*(self.samples[n] for n in op.inputs))
        except ValueError as exc:
            raise ModelError(f"node {self.where()}: shapes do not fit ({exc})", path=self.path) from exc
        self.samples[op.output] = np.zeros_like(out)
        self.ops.append(op)
        src = op.inputs[0] if op.inputs else None
        if (src in self.logical and not isinstance(op, (ops.Reshape, ops.Affine, ops.Gather))
                and out[0].size == self.samples[src][0].size):  # elementwise: same ONNX shape
            self.logical[op.output] = self.logical[src]
        if tag is not None:
            self.tags[op.output] = tag
        return op.output

    def node_precision(self, node: onnx.NodeProto) -> str:
        """The floating-point type ``node`` computes in: its output's, else its first float
        input's (integer kernels requantize with float scales), else the model's coarsest."""
        for name in list(node.output[:1]) + list(node.input):
            t = self.types.get(name)
            if t in PRECISION_OF:
                return PRECISION_OF[t]
        return self.default_precision

    def bind(self, onnx_name: str, ir_name: str) -> None:
        """Make the ONNX tensor ``onnx_name`` refer to the IR tensor ``ir_name``."""
        if onnx_name != ir_name:
            self.alias[onnx_name] = ir_name

    def out_name(self, index: int = 0, suffix: str = "") -> str:
        """Name for an op's output: the ONNX output name, or a fresh one for intermediates."""
        name = self.node.output[index]
        return self.fresh(name + suffix) if suffix else name

    # -- errors ------------------------------------------------------------------------------
    def where(self) -> str:
        if self.node is None:
            return ""
        label = self.node.name or (self.node.output[0] if self.node.output else "?")
        dom = f"{self.node.domain}." if self.node.domain not in ("", "ai.onnx") else ""
        return f"'{label}' ({dom}{self.node.op_type})"

    def unsupported(self, why: str) -> UnsupportedOperator:
        return UnsupportedOperator(f"node {self.where()}: {why}", path=self.path)

    def crosses_batch(self, why: str) -> BatchAxisCrossed:
        return BatchAxisCrossed(f"node {self.where()}: {why}", path=self.path)

    # -- helpers shared by handlers ----------------------------------------------------------
    def per_sample_const(self, c: np.ndarray, like: str) -> np.ndarray:
        """A constant broadcast against a full (batch-first) tensor, re-expressed against the
        per-sample shape of ``like``: a leading size-1 batch axis is dropped."""
        c = np.asarray(c, dtype=np.float64)
        shape = self.logical_shape(like)
        if c.ndim == len(shape) + 1:
            if c.shape[0] != 1:
                raise self.crosses_batch(f"constant of shape {list(c.shape)} broadcasts over the batch axis")
            c = c[0]
        if self.var(like) in self.logical and c.size > 1:  # against the ONNX shape, then flat
            try:
                c = np.broadcast_to(c, shape).reshape(-1)
            except ValueError:
                raise self.unsupported(f"constant of shape {list(c.shape)} does not broadcast to {list(shape)}") from None
        return c

    def per_axis(self, values: np.ndarray, axis: int, like: str) -> np.ndarray:
        """A per-axis parameter (1-D, along ``axis`` of a batch-first tensor) shaped to broadcast
        against the IR tensor ``like`` (flattened where the IR holds it flat)."""
        shape = self.logical_shape(like)
        v = self.axis_shape(values, axis, len(shape))
        if self.var(like) in self.logical and v.size > 1:
            v = np.broadcast_to(v, shape).reshape(-1)
        return v

    def axis_shape(self, values: np.ndarray, axis: int, per_sample_rank: int) -> np.ndarray:
        """Reshape a 1-D per-axis parameter so it broadcasts along ``axis`` of a batch-first
        tensor of per-sample rank ``per_sample_rank``."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 0 or values.size == 1:
            return values.reshape(())
        full_rank = per_sample_rank + 1
        axis = axis + full_rank - (1 if self.batchless else 0) if axis < 0 else axis
        axis += 1 if self.batchless else 0  # count the IR's batch axis
        if axis == 0:
            raise self.crosses_batch("per-axis quantization along the batch axis")
        shape = [1] * per_sample_rank
        shape[axis - 1] = values.size
        return values.reshape(shape)
