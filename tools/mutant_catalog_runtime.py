"""The catalog's mutants of the trainer's saved state and the kernels' runtime plumbing:
``meanflow/train_state.py``, ``mfkernels/backends/triton/launch.py`` and
``mfkernels/backends/csrc.py``. Each is a bug that resumes, launches or loads otherwise than
asked, without a word."""

from mutant import Mutant

__all__ = ["RUNTIME_MUTANTS"]

RUNTIME_MUTANTS: list[Mutant] = []
