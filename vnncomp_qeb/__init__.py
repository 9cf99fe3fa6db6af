"""vnncomp-qeb: verify that a quantized network stays within an error bound of its float original."""

__version__ = "0.1.0"
