"""The operators of the graph IR, by name: every analysis refers to them as ``ops.X``.

Every tensor is real-valued and carries a leading batch axis: an op maps arrays of shape
``(B, *shape)`` to ``(B, *shape')``. Integer ONNX tensors (the outputs of QuantizeLinear and the
QOperator kernels) are represented by their dequantized real value; every quantization form is
normalised to :class:`FakeQuant`. Each op owns all of its rules (:mod:`vnncomp_qeb.ir.op_base`):
the linear ops are in :mod:`vnncomp_qeb.ir.linear`, the clamps and roundings in
:mod:`vnncomp_qeb.ir.clamp`, the other nonlinear ops in :mod:`vnncomp_qeb.ir.nonlinear` and
:mod:`vnncomp_qeb.ir.dynamic_quant`.
"""

from __future__ import annotations

from vnncomp_qeb import numerics
from vnncomp_qeb.ir.clamp import CLAMPS, Clamp, Clip, FakeQuant, Relu, Round, Rounding  # noqa: F401
from vnncomp_qeb.ir.linear import (Add, AddConst, Affine, CastFloat, Concat, Gather, MulConst,  # noqa: F401
                                   Reshape, Sub)
from vnncomp_qeb.ir.op_base import ROUNDING_MODES, Op, round_with, to_precision  # noqa: F401

LINEAR_KINDS = (Affine, AddConst, MulConst, Add, Sub, Reshape, Concat, Gather)
PRECISIONS = numerics.PRECISIONS
coarsest = numerics.coarsest
