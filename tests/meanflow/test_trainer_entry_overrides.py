"""How the trainer's command line and config files set keys (meanflow/config_overrides.py):
a mapping joins what the preset set, a number reads as a number, a key never silently takes
the word ``true``, and a YAML boolean in a word key says how to write the word."""

import pytest

from meanflow.config import TrainConfig, parse_args


@pytest.mark.parametrize("text", ["model_kwargs:\n  depth: 3\n", "model_kwargs: {depth: 3}\n"])
def test_a_files_model_kwargs_join_the_presets(tmp_path, text):
    """Every preset sets model_kwargs.time_scale 1 (DiT's 1000 blows the MeanFlow target up):
    a file's model_kwargs mapping adds its keys to it, as a file's loss: mapping does."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert parse_args(["--config", str(path)]).model_kwargs == {"time_scale": 1.0, "depth": 3}
    assert parse_args(["--model_kwargs", "{depth: 3}"]).model_kwargs == {"time_scale": 1.0, "depth": 3}
    assert parse_args(["--config", str(path), "--model_kwargs.time_scale", "2"]).model_kwargs == {
        "time_scale": 2,
        "depth": 3,
    }
    assert TrainConfig.from_name("mnist").model_kwargs == {"time_scale": 1.0}  # the preset unchanged


@pytest.mark.parametrize("text", ["1e3", "1000.0"])
def test_a_model_keyword_in_exponent_form_is_a_number(text):
    """YAML 1.1 reads 1e3 (no dot) as a string: the DiT then refused the number typed."""
    assert parse_args(["--model_kwargs.time_scale", text]).model_kwargs["time_scale"] == 1000.0


@pytest.mark.parametrize("key", ["out_dir", "data.path", "resume", "steps", "loss.cfg_w", "loss"])
def test_a_key_without_its_value_is_refused(key):
    """``--out_dir --steps 5`` trained into a folder named ``true``."""
    with pytest.raises(ValueError, match=f"--{key} needs a value"):
        parse_args([f"--{key}", "--steps", "5"])
    with pytest.raises(ValueError, match=f"--{key} needs a value"):
        parse_args(["--steps", "5", f"--{key}"])


def test_a_bare_flag_is_true_for_a_bool_key_or_a_model_keyword():
    c = parse_args(["--compile", "--keep_full", "--model_kwargs.qk_norm", "--steps", "5"])
    assert c.compile is True and c.keep_full is True and c.steps == 5
    assert c.model_kwargs["qk_norm"] is True


def test_a_yaml_boolean_in_a_word_key_says_to_quote_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("cuda_graphs: on\n")
    with pytest.raises(TypeError, match="'cuda_graphs' must be str, got True .*quote"):
        parse_args(["--config", str(path)])
    path.write_text("cuda_graphs: 'on'\n")
    assert parse_args(["--config", str(path)]).cuda_graphs == "on"


def test_a_files_whole_number_for_a_float_key_is_a_float(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("grad_clip: 2\nloss: {cfg_w: 3}\n")
    c = parse_args(["--config", str(path)])
    assert (c.grad_clip, c.loss.cfg_w) == (2.0, 3.0) and type(c.grad_clip) is type(c.loss.cfg_w) is float


def test_a_config_never_shares_a_presets_lists():
    c = TrainConfig.from_name("mnist")
    c.ema_decays.append(0.5)
    c.betas[0] = 0.5
    fresh = TrainConfig.from_name("mnist")
    assert fresh.ema_decays == [0.999] and fresh.betas == [0.9, 0.95]


@pytest.mark.parametrize("word", ["none", "None", "NULL", "null"])
def test_none_in_any_case_clears_an_optional_key(word):
    c = parse_args(["--data.path", word, "--backend", word, "--data.vae", word])
    assert (c.data.path, c.backend, c.data.vae) == (None, None, None)
    assert parse_args(["--out_dir", word]).out_dir == word  # a key that cannot be None keeps the word


@pytest.mark.parametrize(
    "argv, error, message",
    [
        (["--loss", "0.5"], TypeError, "config key 'loss' takes a mapping, got '0.5'"),
        (["--steps.max", "3"], ValueError, "unknown config key 'steps.max'"),
        (["--lr.value", "3"], ValueError, "unknown config key 'lr.value'"),
        (["--loss.cfg_w.x", "3"], ValueError, "unknown config key 'loss.cfg_w.x'"),
    ],
)
def test_a_key_below_a_value_or_a_value_for_a_section_is_refused(argv, error, message):
    with pytest.raises(error, match=message):
        parse_args(argv)


def test_a_files_section_must_be_a_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: /data/mnist\n")
    with pytest.raises(TypeError, match="config key 'data' takes a mapping, got '/data/mnist'"):
        parse_args(["--config", str(path)])


def test_dashes_and_negative_values():
    c = parse_args(["--batch-size", "32", "--loss.time-mean", "-0.4", "--loss.time_std=1.5", "--seed", "7"])
    assert (c.batch_size, c.loss.time_mean, c.loss.time_std, c.seed) == (32, -0.4, 1.5, 7)
    assert parse_args(["--loss.time_mean", "-.4"]).loss.time_mean == -0.4


def test_a_files_single_ema_decay_is_a_list_as_on_the_command_line(tmp_path):
    """``--ema_decays 0.99`` is one EMA: so is a file's ``ema_decays: 0.99`` (it was refused
    as not a list), and a mapping there is still refused."""
    path = tmp_path / "run.yaml"
    path.write_text("ema_decays: 0.99\n")
    assert parse_args(["--config", str(path)]).ema_decays == parse_args(["--ema_decays", "0.99"]).ema_decays
    assert parse_args(["--config", str(path)]).ema_decays == [0.99]
    path.write_text("ema_decays: {a: 0.99}\n")
    with pytest.raises(TypeError, match="'ema_decays' must be list"):
        parse_args(["--config", str(path)])


@pytest.mark.parametrize("argv", [["--pre", "mnist-long"], ["--conf", "run.yaml"]])
def test_a_prefix_of_preset_or_config_is_refused(argv):
    """argparse took ``--pre`` for ``--preset``: a key added later with that prefix would
    silently change what an old command means."""
    with pytest.raises(ValueError, match=f"unknown config key '{argv[0][2:]}'"):
        parse_args(argv)
