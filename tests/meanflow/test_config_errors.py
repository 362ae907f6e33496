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
        (["--loss.time_std", "-1"], ValueError, r"^loss.time_std must be > 0, got -1.0$"),
        (["--loss.tangent_rows", "some"], ValueError, r"^loss.tangent_rows must be 'r_neq_t' or 'all'"),
        (["--loss.ratio_r_neq_t", "2"], ValueError, r"^loss.ratio_r_neq_t must be a number in \[0.0, 1.0\]"),
        (["--loss.cfg_t_min", "0.9", "--loss.cfg_t_max", "0.1"], ValueError, r"^loss.cfg_t_min \(0.9\) must"),
        (["--loss.objective", "flow"], ValueError, r"^loss.objective must be one of"),
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


@pytest.mark.parametrize(
    "library, model_class, good, typo, message",
    [
        (
            "timm",
            "timm.VisionTransformer",
            {"embed_dim": "16", "depth": "1", "num_heads": "2", "patch_size": "7", "time_scale": "1"},
            "embed_dimm",
            r"model_kwargs.embed_dimm: neither VisionTransformer nor its adapter takes it "
            r"\(did you mean embed_dim\?\)",
        ),
        (
            "diffusers",
            "diffusers.DiTTransformer2DModel",
            {"num_layers": "1", "attention_head_dim": "8", "num_attention_heads": "2", "time_scale": "1"},
            "foo",
            r"model_kwargs.foo: neither DiTTransformer2DModel nor its adapter takes it$",
        ),
    ],
)
def test_a_library_models_unknown_keyword_is_refused_naming_it(library, model_class, good, typo, message):
    """An adapter model's keywords go to the library's constructor only when the model is built,
    after the data is read: a typo is refused by the config instead, the right ones still parse."""
    pytest.importorskip(library)
    argv = ["--model_class", model_class]
    for key, value in good.items():
        argv += [f"--model_kwargs.{key}", value]
    assert parse_args(argv).model_kwargs.keys() == good.keys()
    with pytest.raises(ValueError, match=message):
        parse_args([*argv, f"--model_kwargs.{typo}", "3"])
