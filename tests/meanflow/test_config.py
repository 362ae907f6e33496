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


# ImageNet-1k's training images: the ImageNet presets' epochs are counted in these.
IMAGENET_TRAIN_IMAGES = 1_281_167


@pytest.mark.parametrize("name, model", [("imagenet256-xl2", "DiT-XL/2"), ("imagenet256-b2", "DiT-B/2")])
def test_imagenet_presets_are_the_documented_recipe(name, model):
    """The model its name says, trained on a prepare_latents folder for the 240 epochs the runs
    the presets follow took (docs/design.md section 7), keeping the README's 24 checkpoints over
    its 1.2M steps."""
    c = TrainConfig.from_name(name)
    assert (c.model, c.data.name) == (model, "latents")
    assert round(c.steps * c.batch_size / IMAGENET_TRAIN_IMAGES) == 240
    assert round(c.steps / 100_000) == 12 and c.steps // c.keep_every == 24


def test_every_preset_writes_its_own_folder():
    """Two presets' runs in one out_dir would resume (or be refused by) each other."""
    folders = {TrainConfig.from_name(name).out_dir for name in PRESETS}
    assert len(folders) == len(PRESETS)


def test_documented_defaults():
    """CUDA graphs stay off until their GPU tests pass (docs/design.md section 5), and an image
    folder run stops past 1% of an epoch's images failing to read (README, Data at scale)."""
    for name in PRESETS:
        assert TrainConfig.from_name(name).cuda_graphs == "off", name
    assert parse_args([]).data.max_read_failures == 0.01


@pytest.mark.parametrize(
    "argv",
    [
        ["--seed", str(2**32 - 1)],
        ["--eval_samples", "0"],
        ["--lr_schedule", "linear"],
        ["--data.num_workers", "0"],
        ["--cuda_graphs", "on"],
    ],
)
def test_documented_values_at_the_ends_of_their_ranges_parse(argv):
    parse_args(argv)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", str(2**32)], r"seed must be an integer in \[0, 4294967296\), got 4294967296"),
        (["--precision", "fp16"], "precision must be auto, bf16 or fp32, got 'fp16'"),
        (["--cuda_graphs", "yes"], "cuda_graphs must be auto, on or off, got 'yes'"),
    ],
)
def test_values_just_outside_a_range_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_the_loss_gets_the_jvp_asked_for_and_flow_matching_its_keys():
    """A library model's loss computes du/dt by the jvp the trainer gives it (it has no dual
    pass); flow matching takes no jvp, and its class dropout is the configured one."""
    from meanflow.config import LossConfig
    from meanflow.loss import func_jvp

    assert LossConfig().build(jvp=func_jvp).jvp is func_jvp
    fm = LossConfig(objective="flow_matching", class_dropout=0.25).build(jvp=func_jvp)
    assert fm.class_dropout == 0.25
