"""Every program's usage line is the command a reader types, and every flag says what it does."""

import argparse
import importlib

import pytest

PROGRAMS = ["generate", "evaluate", "export", "sampler", "eval_mnist", "prepare_latents", "demo"]


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


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("export", ["--ema", "1", "--raw"], "argument --raw: not allowed with argument --ema"),
        ("generate", ["--ema", "1", "--raw"], "argument --raw: not allowed with argument --ema"),
        ("export", ["--num-heads", "16"], "argument --num-heads: only with --official-dit or --official-sit"),
        (
            "generate",
            ["--scaling-factor", "0.2"],
            "argument --scaling-factor: only with --vae or --vae-config",
        ),
        (
            "generate",
            ["--vae", "random", "--scaling-factor", "0"],
            "--scaling-factor: must be a finite number > 0",
        ),
        (
            "generate",
            ["--vae", "random", "--scaling-factor", "-1"],
            "--scaling-factor: must be a finite number",
        ),
    ],
)
def test_an_option_that_would_do_nothing_is_a_usage_error(name, argv, message, tmp_path, capsys):
    """Options the run would ignore, or that contradict each other, stop it before any work."""
    argv = ["--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out"), *argv]
    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"meanflow.{name}").main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
