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
