"""The catalog's mutants of what a checkpoint records of an image folder and how a resume
compares it. Each is a bug that resumes a run onto other images without a word."""

from mutant import Mutant

__all__ = ["RESUME_DATA_MUTANTS"]

RESUME_DATA_MUTANTS: list[Mutant] = []
