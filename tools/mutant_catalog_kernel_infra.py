"""The catalog's mutants of the kernels' plumbing: which tiles a launch may take, how Triton
is found and run (the interpreter, the compile cache), how a kernel is launched, and how the
csrc extension's ops are reached. Each is a bug that runs a kernel other than the one meant,
or on arguments it was not checked for, without a word."""

from mutant import Mutant

__all__ = ["KERNEL_INFRA_MUTANTS"]

KERNEL_INFRA_MUTANTS: list[Mutant] = []
