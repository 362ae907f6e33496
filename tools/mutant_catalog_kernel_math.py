"""The catalog's mutants of the small kernels' math outside attention: the torch composites
that stand in for the fused ops, the Triton pointwise, gated-residual and RMSNorm duals, and
the dual-op autograd wrapper. Each is a bug that gives a value, a tangent or a gradient other
than the float64 reference's without a word."""

from mutant import Mutant

__all__ = ["KERNEL_MATH_MUTANTS"]

KERNEL_MATH_MUTANTS: list[Mutant] = []
