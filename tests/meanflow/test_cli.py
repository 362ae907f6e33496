"""What every program does with an error (meanflow/cli.py): one line, status 2 for what the
arguments got wrong, 1 for the environment; a bug keeps its traceback."""

import argparse

import pytest

from meanflow.cli import BAD_INPUT, errors_as_one_line

PARSER = argparse.ArgumentParser(prog="python -m meanflow.program")


@pytest.mark.parametrize(
    "error, code",
    [
        (ValueError("--num must be >= 1"), 2),
        (FileNotFoundError("checkpoint 'last.pt' not found"), 2),  # an OSError, but a path given
        (PermissionError(13, "Permission denied"), 1),
        (OSError(28, "No space left on device"), 1),
    ],
)
def test_an_error_is_one_line_with_its_status(error, code, capsys):
    with pytest.raises(SystemExit) as stop, errors_as_one_line(PARSER):
        raise error
    assert stop.value.code == code and capsys.readouterr().err == f"error: {error}\n"


def test_a_program_may_count_more_errors_as_bad_input(capsys):
    with pytest.raises(SystemExit) as stop, errors_as_one_line(PARSER, (*BAD_INPUT, NotADirectoryError)):
        raise NotADirectoryError("'images.txt' is not a folder")
    assert stop.value.code == 2


@pytest.mark.parametrize("bug", [RuntimeError("shape mismatch"), KeyError("ema"), TypeError("None")])
def test_a_bug_keeps_its_traceback(bug):
    with pytest.raises(type(bug)), errors_as_one_line(PARSER):
        raise bug
