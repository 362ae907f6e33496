"""The catalog's mutants of the programs' command lines (generate, prepare_latents, export,
evaluate, sample). Each is a bug that lets a program run on an argument it should refuse, or
names the wrong one."""

from mutant import Mutant

__all__ = ["PROGRAM_ARG_MUTANTS"]

PROGRAM_ARG_MUTANTS: list[Mutant] = []
