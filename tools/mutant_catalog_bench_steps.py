"""Mutants of the step benchmarks: ``benchmarks/step_runner.py`` (the timed training steps,
eager, compiled and graphed) and the programs that report them (``jvp_throughput.py``,
``step_phases.py``, ``trainer_step.py``, ``training_step.py``, ``any_model_jvp.py``): a step
that times other work than it names, a FLOP count or MFU off, a row that reports the wrong
setting."""

from mutant import Mutant

BENCH_STEP_MUTANTS: list[Mutant] = []
