"""The catalog's mutants of the trainer's config and what a run reports: ``meanflow/config.py``,
``meanflow/train_report.py`` and ``meanflow/class_names.py``. Each is a bug that trains with
other settings than those asked, or reports a run otherwise than it went, without a word."""

from mutant import Mutant

__all__ = ["CONFIG_REPORT_MUTANTS"]

CONFIG_REPORT_MUTANTS: list[Mutant] = []
