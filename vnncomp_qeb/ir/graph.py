"""The graph: one input tensor, ops in topological order, named outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vnncomp_qeb.ir.ops import Op


@dataclass(eq=False)
class Graph:
    """A network over one real input ``input_name`` of per-sample shape ``input_shape``.

    ``outputs`` name the tensors whose flattened concatenation is the network's output vector
    (the ``Y_0 … Y_m`` of VNN-LIB 1.0). ``shapes`` holds every tensor's per-sample shape.
    """

    input_name: str
    input_shape: tuple[int, ...]
    ops: list[Op]
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    name: str = "net"

    def __post_init__(self) -> None:
        self.producer = {op.output: op for op in self.ops}
        if not self.shapes:
            self.infer_shapes()

    # -- structure -------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape, dtype=np.int64))

    @property
    def output_size(self) -> int:
        return int(sum(np.prod(self.shapes[o], dtype=np.int64) for o in self.outputs))

    def consumers(self) -> dict[str, list[Op]]:
        """Map each tensor name to the ops that read it."""
        out: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in op.inputs:
                out.setdefault(name, []).append(op)
        return out

    def ancestors(self, tensor: str) -> set[str]:
        """All tensors (the tensor itself included) that ``tensor`` depends on."""
        seen, stack = set(), [tensor]
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            op = self.producer.get(t)
            if op is not None:
                stack.extend(op.inputs)
        return seen

    def infer_shapes(self) -> None:
        """Per-sample shapes of every tensor, found by evaluating one zero sample."""
        values = self.run(np.zeros((1,) + tuple(self.input_shape)), keep_all=True)
        self.shapes = {k: tuple(v.shape[1:]) for k, v in values.items()}

    # -- evaluation ------------------------------------------------------------------------
    def run(self, x: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
        """Evaluate on a batch ``x`` of shape (B, *input_shape); returns the output tensors
        (every tensor when ``keep_all``)."""
        values = {self.input_name: np.asarray(x, dtype=np.float64)}
        needed = None if keep_all else self._last_use()
        for i, op in enumerate(self.ops):
            values[op.output] = op.forward(*(values[n] for n in op.inputs))
            if needed is not None:
                for n in op.inputs:
                    if needed.get(n) == i and n not in self.outputs:
                        del values[n]
        return values if keep_all else {o: values[o] for o in self.outputs}

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Output vector (B, output_size) for a batch of flat or shaped inputs, float64."""
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape((x.shape[0],) + tuple(self.input_shape))
        outs = self.run(x)
        return np.concatenate([outs[o].reshape(x.shape[0], -1) for o in self.outputs], axis=1)

    def _last_use(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            for n in op.inputs:
                last[n] = i
        return last

    # -- printing --------------------------------------------------------------------------
    def describe(self) -> str:
        """A readable listing of the IR, one op per line: output = kind(inputs) parameters : the
        element type onnxruntime computes it in, per-sample shape <- the ONNX node."""
        lines = [f"graph {self.name}: input {self.input_name} {list(self.input_shape)}"]
        for op in self.ops:
            shape = list(self.shapes.get(op.output, ()))
            src = f"  <- {op.source}" if op.source else ""
            lines.append(
                f"  {op.output} = {op.kind}({', '.join(op.inputs)}) {op.describe()} : {op.precision} {shape}{src}"
            )
        lines.append(f"outputs: {', '.join(self.outputs)} (size {self.output_size})")
        return "\n".join(lines)
