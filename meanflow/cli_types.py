"""``type=`` callables for the programs' numeric options. A bad value is refused while the
command line is parsed, in argparse's words, which name the option as the user typed it
(``argument --workers: must be an integer >= 0, got -1``), before a model, a VAE or a folder
is touched: refused later, it failed in a library's words (DataLoader's ``num_workers``) after
minutes of work, or ran as something else in silence."""

import argparse


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
