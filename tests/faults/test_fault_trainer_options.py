"""Bad trainer options, config files and presets: one line naming the option, before any work."""

import json

import pytest
from trainer_cli import cli_error, tiny_argv

from meanflow.config import parse_args


@pytest.mark.parametrize(
    "option, value, allowed",
    [
        ("grad_clip", "-1", "a finite number >= 0 (0 = no clipping), got -1.0"),
        ("grad_clip", "nan", "a finite number >= 0"),
        ("lr", "0", "a finite number > 0, got 0.0"),
        ("lr", "-1e-3", "a finite number > 0"),
        ("lr", "inf", "a finite number"),
        ("steps", "-3", "an integer >= 1, got -3"),
        ("batch_size", "0", "an integer >= 1"),
        ("warmup_steps", "-1", "an integer >= 0"),
        ("log_every", "-1", "an integer >= 0"),
        ("sample_every", "-1", "an integer >= 0"),
        ("eval_every", "-2", "an integer >= 0"),
        ("ckpt_every", "-1", "an integer >= 0"),
        ("keep_every", "-1", "an integer >= 0"),
        ("sample_steps", "0", "an integer >= 1"),
        ("threads", "-1", "an integer >= 0"),
        ("data.num_workers", "-1", "an integer >= 0"),
        ("data.image_size", "0", "an integer >= 1"),
        ("eval_samples", "-5", "0 (no evaluation) or an integer >= 2"),
        ("eval_samples", "1", "0 (no evaluation) or an integer >= 2"),
        ("ema_decays", "1.0", "a list of numbers in [0, 1), got [1.0]"),
        ("ema_decays", "0.9,-0.1", "a list of numbers in [0, 1)"),
        ("ema_decays", "0.9,fast", "a list of numbers in [0, 1)"),
        ("betas", "0.9", "two numbers in [0, 1)"),
        ("betas", "1,0.95", "two numbers in [0, 1)"),
        ("weight_decay", "-0.1", "a finite number >= 0"),
        ("seed", "-1", "an integer in [0, 4294967296)"),
        ("loss.time_mean", "nan", "a finite number"),
        ("loss.cfg_w", "inf", "a finite number"),
    ],
)
def test_out_of_range_option_is_one_line_naming_it(tmp_path, fake_mnist, option, value, allowed):
    """Refused while parsing: no model, no data, no out_dir (a 1-step run would start otherwise)."""
    message = cli_error(tiny_argv(tmp_path / "run", fake_mnist, f"--{option}", value))
    assert f"error: {option} must be {allowed}" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "option",
    [
        "grad_clip",
        "eval_samples",
        "warmup_steps",
        "log_every",
        "sample_every",
        "eval_every",
        "ckpt_every",
        "keep_every",
        "threads",
        "data.num_workers",
    ],
)
def test_zero_is_taken_where_documented(option):
    """0 is the documented off (or "at the end", or "torch's default") of these options."""
    config = parse_args([f"--{option}", "0"])
    section, _, key = option.rpartition(".")
    assert getattr(getattr(config, section) if section else config, key) == 0


def test_an_ema_decay_of_zero_is_taken():
    assert parse_args(["--ema_decays", "0"]).ema_decays == [0]


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("run.yaml", "steps: 3\nloss:\n  cfg_w: [1, 2\nlr: 0.1\n", "is not valid YAML (line 4, column 3)"),
        ("run.yaml", "steps: 3\n  lr: 0.1\n", "is not valid YAML (line 2, column 5)"),
        ("run.json", '{"steps": 3,\n "lr": }', "is not valid JSON (line 2, column 8)"),
    ],
)
def test_config_file_syntax_error_names_file_and_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    message = cli_error(["--config", str(path), "--out_dir", str(tmp_path / "run")])
    assert f"--config file {str(path)!r} {where}: " in message
    assert not (tmp_path / "run").exists()


def test_config_file_preset_chooses_the_preset(tmp_path):
    """A file's ``preset:`` picks the preset its keys then override; ``--preset`` overrides it."""
    path = tmp_path / "run.yaml"
    path.write_text("preset: mnist-long\nlr: 0.002\n")
    config = parse_args(["--config", str(path)])
    assert (config.steps, config.out_dir, config.lr) == (2000, "runs/mnist-long", 0.002)
    config = parse_args(["--preset", "mnist", "--config", str(path)])
    assert (config.steps, config.out_dir, config.lr) == (1000, "runs/mnist", 0.002)
    (tmp_path / "run.json").write_text(json.dumps({"preset": "mnist-huge"}))
    message = cli_error(["--config", str(tmp_path / "run.json")])
    assert f"--config file {str(tmp_path / 'run.json')!r}: preset must be one of " in message
    assert message.endswith("got 'mnist-huge'")


def test_meanflow_loss_keys_the_baseline_never_reads_are_refused(tmp_path, fake_mnist):
    """flow_matching reads time_mean, time_std and class_dropout: a MeanFlow key set for it
    would do nothing and be recorded as if it had. The preset's own values are not refused."""
    fm = ["--loss.objective", "flow_matching"]
    message = cli_error(
        tiny_argv(tmp_path / "run", fake_mnist, *fm, "--loss.cfg_w", "3", "--loss.ratio_r_neq_t", "0.9")
    )
    assert message.endswith(
        "error: loss.ratio_r_neq_t, loss.cfg_w: loss.objective flow_matching reads only loss.time_mean, "
        "loss.time_std, loss.class_dropout; leave the MeanFlow keys at the preset's values"
    )
    assert not (tmp_path / "run").exists()
    for preset in ("mnist", "imagenet256-b2"):
        assert parse_args(["--preset", preset, *fm, "--loss.time_std", "1.2"]).loss.time_std == 1.2


@pytest.mark.parametrize(
    "key, value, data", [("input_size", "64", 32), ("in_channels", "3", 1), ("num_classes", "5", 10)]
)
def test_model_shape_other_than_the_datas_is_refused_before_any_write(tmp_path, fake_mnist, key, value, data):
    message = cli_error(tiny_argv(tmp_path / "run", fake_mnist, f"--model_kwargs.{key}", value))
    assert message.endswith(
        f"error: model_kwargs.{key} {int(value)} does not match the data (mnist: {data}); "
        "leave it out, the data sets it"
    )
    assert not (tmp_path / "run").exists()
