"""meanflow.vae: the one AutoencoderKL loader (configs, dtype, errors) and decode_latents."""

import os
import sys

import pytest
import torch

from meanflow import vae as mvae


def random_vae(config, **kw):
    with pytest.warns(UserWarning, match="RANDOM"):
        return mvae.load_vae("random", config, **kw)


def test_config_sources_and_dtype(tiny_vae):
    pytest.importorskip("diffusers")
    config, path = tiny_vae
    assert mvae.vae_config(os.path.dirname(path)) == config  # a folder; metadata keys dropped
    assert mvae.vae_config(None)["block_out_channels"] == [128, 256, 512, 512]
    a = random_vae(config)
    b = random_vae(path, dtype=torch.float64)
    assert next(b.parameters()).dtype == torch.float64 and not next(b.parameters()).requires_grad
    for pa, pb in zip(a.parameters(), b.parameters()):  # "random" is seeded: the same weights
        assert torch.equal(pa.double(), pb)
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    images = mvae.decode_latents(b, z)  # scale from the config (AutoencoderKL's default 0.18215)
    assert images.dtype == torch.float32 and images.shape == (2, 3, 32, 32)
    assert images.abs().max() <= 1
    with torch.no_grad():
        want = b.decode(z.double() / 0.18215).sample.float().clamp(-1, 1)
    assert torch.equal(images, want)
    assert mvae.latent_scale(b) == (0.18215, 0.0)


def test_errors_name_the_problem(tmp_path, tiny_vae, monkeypatch):
    pytest.importorskip("diffusers")
    config, _ = tiny_vae
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mvae.load_vae(str(tmp_path / "empty"))
    random_vae(config).save_pretrained(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="has its own config.json"):
        mvae.load_vae(str(tmp_path / "saved"), config)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        mvae.load_vae(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="VAE config"):
        mvae.vae_config(str(tmp_path / "nope.json"))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"meanflow-engine\[eval\]"):
        mvae.load_vae(str(tmp_path / "saved"))
