"""The catalog's mutants of evaluation and the exported pipeline: FID/IS/KID runs
(``meanflow/evaluate.py``) and the diffusers-style pipeline (``meanflow/pipeline.py``). Each is
a bug that scores, samples or saves something other than what was asked, without a word."""

from mutant import Mutant

__all__ = ["EVAL_PIPELINE_MUTANTS"]

EVAL_PIPELINE_MUTANTS: list[Mutant] = []
