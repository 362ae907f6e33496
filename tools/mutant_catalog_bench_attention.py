"""Mutants of the attention benchmarks: ``benchmarks/attention_jvp.py`` (our JVP forward and
backward against the libraries: the TFLOP/s the kernels' targets are judged on),
``benchmarks/attention_baselines.py`` (the libraries' rows) and
``benchmarks/attention_features.py`` (causal, grouped-query and masked attention): a row that
times other work than it names, a FLOP count off, a shape or setting misreported."""

from mutant import Mutant

__all__ = ["BENCH_ATTENTION_MUTANTS"]


def _m(name, path, find, replace, tests, why):
    return Mutant(f"battn-{name}", path, find, replace, tests, why)


# One mutant per five lines, as a table: the formatter would spread each over eight.
# fmt: off
BENCH_ATTENTION_MUTANTS = [
]
# fmt: on
