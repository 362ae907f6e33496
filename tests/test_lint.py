"""The code stays as ruff (the test extra's linter and formatter, set up in pyproject.toml)
leaves it: a lint error or an unformatted file fails the suite, not a reviewer's read."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("ruff", reason="ruff is in the test extra: pip install -e .[test]")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_leaves_the_repository_as_it_is(command):
    run = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, f"ruff {' '.join(command)} .:\n{run.stdout[-3000:]}\n{run.stderr[-1000:]}"
