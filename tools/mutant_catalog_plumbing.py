"""The catalog's mutants of the step's plumbing: ``meanflow/train_step.py``,
``meanflow/distributed.py``, ``meanflow/demo.py``, ``meanflow/data/scan_cache.py`` and
``mfkernels/backends/triton/triton_compat.py``. Each is a bug that runs a step, a rank, the
demo or a cached scan otherwise than asked, without a word."""

from mutant import Mutant

__all__ = ["PLUMBING_MUTANTS"]

PLUMBING_MUTANTS: list[Mutant] = []
