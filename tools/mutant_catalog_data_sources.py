"""The catalog's mutants of the small data sources and the MNIST evaluation (synthetic data,
MNIST files, the loader factory, evaluation inputs). Each is a bug that feeds or scores other
data than the one asked for, without a word."""

from mutant import Mutant

__all__ = ["DATA_SOURCE_MUTANTS"]

DATA_SOURCE_MUTANTS: list[Mutant] = []
