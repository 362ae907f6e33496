"""Every program's usage line is the command a reader types, and every flag says what it does."""

import argparse
import importlib

import pytest
import torch

PROGRAMS = ["generate", "evaluate", "export", "sampler", "eval_mnist", "prepare_latents", "demo"]


class _Parsed(Exception):
    pass


def _parser(name, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``python -m meanflow.NAME`` reads its arguments with."""

    def capture(parser, *args, **kwargs):
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parsed) as parsed:
        importlib.import_module(f"meanflow.{name}").main([])
    return parsed.value.args[0]


def _help(parser, option: str) -> str:
    action = next(a for a in parser._actions if option in a.option_strings)
    return parser._get_formatter()._expand_help(action)


@pytest.mark.parametrize("name", PROGRAMS)
def test_usage_names_the_command_and_every_flag_has_help(name, monkeypatch):
    parser = _parser(name, monkeypatch)
    assert parser.prog == f"python -m meanflow.{name}"
    assert not [a.dest for a in parser._actions if not a.help]


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_flag_with_a_default_says_it(name, monkeypatch):
    """A newcomer reads what a flag left out does: its help names the default and its value. An
    optional value left unset (None) does something too (no VAE, the weights of an environment
    variable, only printed): its help says what, as its default."""
    parser = _parser(name, monkeypatch)
    unsaid = []
    for action in parser._actions:
        if action.default is False or action.default == argparse.SUPPRESS or action.required:
            continue  # nothing to say: a switch, --help, an argument that must be given
        if action.default is None and action.nargs == 0:
            continue  # a store_const left unset: its group's other flag says it
        if not action.option_strings and action.nargs != "?":
            continue  # a positional argument that must be given
        text = _help(parser, action.option_strings[0]) if action.option_strings else action.help
        if "default" not in text or (action.default is not None and str(action.default) not in text):
            unsaid.append(f"{action.option_strings or action.dest} (default {action.default!r}): {text}")
    assert not unsaid


@pytest.mark.parametrize(
    "name",
    ["generate", "evaluate", "sampler", "prepare_latents", "demo"],
)
def test_device_help_names_what_the_program_accepts(name, monkeypatch):
    """Each --device goes through meanflow.distributed.resolve_device: auto, cpu, cuda, cuda:N."""
    text = _help(_parser(name, monkeypatch), "--device")
    assert all(form in text for form in ("auto", "cpu", "cuda", "cuda:N")), text


def test_evaluate_puts_its_extractor_on_the_device_asked_for():
    """torch-fidelity's cuda=True is .cuda(), the current GPU: --device cuda:1's images would
    meet weights on cuda:0. The meta device stands for a GPU other than the current one."""
    pytest.importorskip("torch_fidelity")
    from fidelity_tiny import TINY

    from meanflow.evaluate import make_extractor

    extractor, _ = make_extractor(TINY, ["feat"], torch.device("meta"), None, verbose=False)
    assert {b.device.type for b in extractor.buffers()} == {"meta"}


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("export", ["--ema", "1", "--raw"], "argument --raw: not allowed with argument --ema"),
        ("generate", ["--ema", "1", "--raw"], "argument --raw: not allowed with argument --ema"),
        ("export", ["--ema", "-1"], "argument --ema: must be an integer >= 0, got -1"),
        ("generate", ["--ema", "-1"], "argument --ema: must be an integer >= 0, got -1"),
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


def _trainer_keys() -> dict:
    """``{--key: its meaning}`` of ``python -m meanflow.train --help``'s key lines."""
    from meanflow.config import keys_help

    return {line.split()[0]: line.split("): ", 1)[1] for line in keys_help()}


def test_trainer_keys_read_alike():
    """Each key's meaning continues its line as the others do: no sentence capital (an acronym
    or a name such as AdamW, CPU, PNG keeps its capitals)."""
    capitalised = [
        f"{key}: {meaning}"
        for key, meaning in _trainer_keys().items()
        if meaning[0].isupper() and meaning.split()[0][1:].islower()
    ]
    assert not capitalised


def test_trainer_keys_say_what_a_sample_grid_shows():
    """sample_steps decides the grids' network evaluations and ema_decays their weights (the
    raw ones without an EMA): sample_every claims neither."""
    keys = _trainer_keys()
    assert "sample grids" in keys["--sample_steps"]
    assert "sample grids" in keys["--ema_decays"] and "none: the raw weights" in keys["--ema_decays"]
    assert not any(claim in keys["--sample_every"] for claim in ("NFE", "EMA"))
    assert all(form in keys["--device"] for form in ("auto", "cpu", "cuda", "cuda:N"))
