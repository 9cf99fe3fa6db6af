"""The graph IR: typed ops, the exact reference evaluator, twin detection."""

from vnncomp_qeb.ir.graph import Graph
from vnncomp_qeb.ir import ops

__all__ = ["Graph", "ops"]
