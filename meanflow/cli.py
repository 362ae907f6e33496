"""What the package's programs share: an error is one line on stderr, no traceback (the trainer
has its own: ``meanflow.train.cli``, ``meanflow.train: error: ...``, status 1 for every error);
the options that pick a checkpoint's weights; ``type=`` callables for numeric options."""

import argparse
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
        type=int_at_least(0),
        default=0,
        help="EMA index in the checkpoint, ema_decays order (default: 0, the first)",
    )
    weights.add_argument("--raw", action="store_true", help="the raw (non-EMA) weights")


# A bad number is refused while the command line is parsed, in argparse's words, which name
# the option as the user typed it (``argument --workers: must be an integer >= 0, got -1``),
# before a model, a VAE or a folder is touched: refused later, it failed in a library's words
# (DataLoader's ``num_workers``) after minutes of work, or ran as something else in silence.
def int_at_least(low: int):
    """An argparse ``type`` taking a whole number ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    return parse
