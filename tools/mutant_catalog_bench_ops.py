"""Mutants of the op and data benchmarks: ``benchmarks/csrc_ops.py`` (the row and pointwise
kernels' times and bytes moved, against torch), ``benchmarks/data_throughput.py`` (the loaders'
images per second) and ``benchmarks/triton_static.py`` (every attention config compiled: its
registers, spills and shared memory): a row that times other work than it names, a byte count
off, a table that misreports what the compiler said."""

from mutant import Mutant

__all__ = ["BENCH_OPS_MUTANTS"]


def _m(name, path, find, replace, tests, why):
    return Mutant(f"bops-{name}", path, find, replace, tests, why)


# One mutant per five lines, as a table: the formatter would spread each over eight.
# fmt: off
BENCH_OPS_MUTANTS = [
]
# fmt: on
