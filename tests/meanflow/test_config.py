import dataclasses
import json
import os

import pytest

from meanflow.config import PRESETS, TrainConfig, parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_presets_validate():
    for name in PRESETS:
        TrainConfig.from_name(name).validate()
    assert parse_args([]).model == TrainConfig.from_name("mnist").model


def test_overrides_and_types():
    c = parse_args(
        [
            "--steps",
            "7",
            "--loss.cfg_w=2",
            "--ema_decays",
            "0.9,0.99",
            "--compile",
            "--model_kwargs.depth",
            "3",
        ]
        + ["--data.path", "none", "--betas", "[0.8, 0.9]", "--backend", "reference"]
    )
    assert c.steps == 7 and c.loss.cfg_w == 2.0 and c.ema_decays == [0.9, 0.99] and c.compile is True
    assert c.model_kwargs == {"time_scale": 1.0, "depth": 3} and c.data.path is None and c.betas == [0.8, 0.9]
    assert parse_args(["--compile", "false"]).compile is False
    parse_args(["--model_kwargs.depth", "2", "--ema_decays", "0.5"])
    assert "depth" not in parse_args([]).model_kwargs  # presets are never mutated


def test_config_file_then_command_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: mnist-long\nsteps: 11\nloss:\n  cfg_k: 0.25\ndata: {name: mnist}\n")
    c = parse_args(["--config", str(path), "--steps", "12"])
    assert c.steps == 12 and c.loss.cfg_k == 0.25 and c.out_dir == "runs/mnist-long"
    jpath = tmp_path / "run.json"
    jpath.write_text(json.dumps({"lr": 0.01, "loss": {"objective": "flow_matching"}}))
    c = parse_args(["--config", str(jpath)])
    assert c.lr == 0.01 and c.loss.objective == "flow_matching"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stepz", "3"], "unknown config key 'stepz'.*did you mean steps"),
        (["--loss.cfgw", "3"], "unknown config key 'loss.cfgw'"),
        (["--steps", "many"], "'steps': cannot read 'many' as int"),
        (["--steps", "0"], "steps must be an integer >= 1, got 0"),
        (["--loss.objective", "self_consistency"], "loss.objective must be one of"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--precision", "fp8"], "precision"),
        (["--lr_schedule", "step"], "lr_schedule must be constant, cosine or linear, got 'step'"),
        (["--out_dir", ""], "out_dir must be a folder path, not empty, got ''"),
    ],
)
def test_bad_keys_and_values(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  nope: 1\n")
    with pytest.raises(ValueError, match=r"unknown config key 'loss.nope' \(from --config"):
        parse_args(["--config", str(bad)])


def test_mnist_presets_are_the_readmes():
    """The default is the recipe the README's main job and numbers describe; mnist-long keeps
    lr 1e-3, the recipe of its README numbers, and differs from it only there and in length."""
    from meanflow.config import _get
    from meanflow.config_overrides import config_keys

    short, long = TrainConfig.from_name("mnist"), TrainConfig.from_name("mnist-long")
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    line = f'# preset "mnist": {short.model}, {short.steps} steps, lr {short.lr:.0e}'.replace("e-0", "e-")
    assert line in readme and f"batch {short.batch_size} at lr" in readme
    assert (short.lr_schedule, long.lr, long.steps) == ("constant", 1e-3, 2000)
    differ = {key for key in config_keys(short) if _get(short, key) != _get(long, key)}
    assert differ == {"lr", "steps", "sample_every", "eval_every", "ckpt_every", "out_dir"}


def test_presets_feed_times_unscaled():
    """Every preset's model embeds t and h in [0, 1] as they are (docs/design.md section 7)."""
    from meanflow.models import DiTConfig

    for name in PRESETS:
        c = TrainConfig.from_name(name)
        assert DiTConfig.from_name(c.model, **c.model_kwargs).time_scale == 1.0, name


def test_loss_config_defaults_are_the_losses_defaults():
    """One place for the loss defaults: ``LossConfig`` has ``MeanFlowLoss``'s arguments (but
    ``jvp``, a function) with its defaults, and flow matching's defaults agree."""
    import inspect

    from meanflow import FlowMatchingLoss, MeanFlowLoss
    from meanflow.config import LossConfig

    def defaults(cls):
        params = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    config = dataclasses.asdict(LossConfig())
    assert config.pop("objective") == "meanflow"
    meanflow = defaults(MeanFlowLoss)
    del meanflow["jvp"]
    assert config == meanflow
    assert defaults(FlowMatchingLoss) == {k: meanflow[k] for k in defaults(FlowMatchingLoss)}


def test_help_gives_every_key_its_type_default_and_meaning(capsys):
    from meanflow.config_overrides import config_keys

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m meanflow.train")
    lines = {
        line.split()[0]: line for line in out.splitlines() if line.startswith("  --") and "(default" in line
    }
    assert sorted(lines) == sorted(f"--{k}" for k in config_keys(TrainConfig()))
    assert "--steps INT (default 1000): optimizer steps" in lines["--steps"]  # the mnist preset's
    assert "--loss.cfg_w FLOAT (default 1.0): guidance scale" in lines["--loss.cfg_w"]
    assert all("): " in line and not line.endswith(": ") for line in lines.values())
