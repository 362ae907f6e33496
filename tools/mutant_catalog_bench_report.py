"""The catalog's mutants of what the benchmarks compute and report on any machine:
``benchmarks/_common.py`` (timing, FLOP counts, result files), ``benchmarks/step_report.py``
and ``benchmarks/render_readme.py`` (the README's tables). Each is a bug that reports a
measurement otherwise than it was taken, without a word."""

from mutant import Mutant

__all__ = ["BENCH_REPORT_MUTANTS"]

BENCH_REPORT_MUTANTS: list[Mutant] = []
