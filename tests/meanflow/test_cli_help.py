"""Every program's usage line is the command a reader types, and every flag says what it does."""

import argparse
import importlib

import pytest

PROGRAMS = ["generate", "evaluate", "export", "sampler", "eval_mnist", "prepare_latents"]


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("name", PROGRAMS)
def test_usage_names_the_command_and_every_flag_has_help(name, monkeypatch):
    def capture(parser, *args, **kwargs):
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parsed) as parsed:
        importlib.import_module(f"meanflow.{name}").main([])
    parser = parsed.value.args[0]
    assert parser.prog == f"python -m meanflow.{name}"
    assert not [a.dest for a in parser._actions if not a.help]
