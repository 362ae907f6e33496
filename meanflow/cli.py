"""What the package's programs share: an error is one line on stderr, no traceback (the trainer
has its own: ``meanflow.train.cli``, ``meanflow.train: error: ...``, status 1 for every error);
the options that pick a checkpoint's weights."""

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


def add_weights_options(parser) -> None:
    """``--ema N`` or ``--raw``: which of a trainer checkpoint's weight sets a program reads."""
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--ema",
        type=int,
        default=0,
        help="EMA index in the checkpoint, ema_decays order (default: 0, the first)",
    )
    weights.add_argument("--raw", action="store_true", help="the raw (non-EMA) weights")
