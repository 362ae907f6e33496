"""Trainer options that the trainer used to refuse only after the data was scanned (an image
folder's scan reads every image) or the model built, or never: refused by the config, naming
the key, before any work."""

import pytest

from meanflow.config import TrainConfig, parse_args


@pytest.mark.parametrize(
    "argv, error, message",
    [
        (["--model", "DiT-X/2"], ValueError, r"model must be a DiT preset: DiT-B/2, .*got 'DiT-X/2'"),
        (["--backend", "trition"], ValueError, r"backend must be none, auto or one of .*'trition'"),
        (["--data.backend", "dalli"], ValueError, r"data.backend must be auto, dali or torch, got 'dalli'"),
        (["--data.latent_mode", "meen"], ValueError, r"data.latent_mode must be sample or mean, got 'meen'"),
        (
            ["--data.max_read_failures", "2"],
            ValueError,
            r"data.max_read_failures must be a number in \[0, 1\]",
        ),
        (["--data.max_read_failures", "-0.5"], ValueError, r"data.max_read_failures must be .* got -0.5"),
        (["--data.max_read_failures", "nan"], ValueError, r"data.max_read_failures must be .* got nan"),
        (["--model_kwargs.depth", "0"], ValueError, r"model_kwargs: depth must be an int >= 1, got 0"),
        (["--model_kwargs.depht", "3"], TypeError, r"model_kwargs: unknown DiTConfig fields \['depht'\]"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(argv, error, message):
    with pytest.raises(error, match=message):
        parse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--backend", "none"],
        ["--backend", "auto"],
        ["--backend", "triton"],
        ["--data.backend", "torch"],
        ["--data.latent_mode", "mean"],
        ["--data.max_read_failures", "0"],
        ["--data.max_read_failures", "1"],
        ["--model", "DiT-XL/2", "--model_kwargs.depth", "2"],
    ],
)
def test_the_allowed_values_still_parse(argv):
    parse_args(argv)


def test_a_bad_model_is_refused_before_the_data_is_read(tmp_path):
    """The trainer's first step reads the data (an image folder: every image): a typo'd model
    name or model keyword is refused before it, not after."""
    from meanflow import train

    config = TrainConfig.from_name("mnist", model="DiT-T/3", device="cpu", out_dir=str(tmp_path / "run"))
    config.data.name, config.data.path = "imagefolder", str(tmp_path / "no-such-folder")
    with pytest.raises(ValueError, match="model must be a DiT preset"):
        train.main(config)
    config.model, config.model_kwargs = "DiT-T/8", {"depth": -1}
    with pytest.raises(ValueError, match="model_kwargs: depth must be an int >= 1, got -1"):
        train.main(config)
    assert not (tmp_path / "run").exists()
