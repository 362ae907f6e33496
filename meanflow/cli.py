"""What the package's programs do with an error: one line on stderr, no traceback. The trainer
has its own (``meanflow.train.cli``: ``meanflow.train: error: ...``, status 1 for every error)."""

import contextlib

BAD_INPUT = (ValueError, FileNotFoundError)


@contextlib.contextmanager
def errors_as_one_line(parser, bad_input=BAD_INPUT):
    """Inside it, ``bad_input`` (what the arguments got wrong) exits with status 2 and any other
    ``OSError`` (a full disk, no permission: the environment) with status 1, as ``parser``'s
    ``error: ...`` line."""
    try:
        yield
    except bad_input as e:
        parser.exit(2, f"error: {e}\n")
    except OSError as e:
        parser.exit(1, f"error: {e}\n")
