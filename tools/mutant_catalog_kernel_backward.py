"""The catalog's mutants of the attention backward kernels and the dual ops' Python side
(``mfkernels/backends/triton/attention_backward_kernels.py``, ``mfkernels/ops.py``). Each is a
bug that gives a gradient other than the float64 reference's without a word."""

from mutant import Mutant

__all__ = ["KERNEL_BACKWARD_MUTANTS"]

KERNEL_BACKWARD_MUTANTS: list[Mutant] = []
