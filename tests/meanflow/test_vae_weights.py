"""load_vae reads the weights files VAEs come in: a training checkpoint holding them under
"model", a whole Stable Diffusion checkpoint (its VAE under first_stage_model., beside its
UNet), a diffusers folder holding both .safetensors and .bin (diffusers reads the
.safetensors), and a folder whose config.json has no _class_name (written by hand)."""

import json

import pytest
import torch

from meanflow import vae as mvae

pytest.importorskip("diffusers")


def random_vae(config, seed=0):
    """A random VAE of ``config`` with weights from ``seed`` (``load_vae("random")`` is seed 0)."""
    with pytest.warns(UserWarning, match="RANDOM"):
        vae = mvae.load_vae("random", config)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        for p in vae.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return vae


def test_a_checkpoint_holding_the_weights_under_model_loads(tmp_path, tiny_vae):
    saved = random_vae(tiny_vae[0], seed=1)
    torch.save({"model": saved.state_dict(), "step": 10}, tmp_path / "vae.pt")
    loaded = mvae.load_vae(str(tmp_path / "vae.pt"), tiny_vae[1])
    assert mvae.weights_sha256(loaded) == mvae.weights_sha256(saved)


def test_a_whole_stable_diffusion_checkpoint_gives_its_vae(tmp_path, tiny_vae):
    saved = random_vae(tiny_vae[0], seed=2)
    state = {f"first_stage_model.{k}": v for k, v in saved.state_dict().items()}
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(8, 4, 3, 3)  # its UNet
    torch.save({"state_dict": state}, tmp_path / "sd.ckpt")
    loaded = mvae.load_vae(str(tmp_path / "sd.ckpt"), tiny_vae[1])
    assert mvae.weights_sha256(loaded) == mvae.weights_sha256(saved)


def test_a_folder_with_both_weight_files_reads_the_safetensors(tmp_path, tiny_vae):
    """As diffusers does: the .bin beside it may be a stale copy of other weights."""
    fresh, stale = random_vae(tiny_vae[0], seed=3), random_vae(tiny_vae[0], seed=4)
    fresh.save_pretrained(str(tmp_path / "vae"))
    torch.save(stale.state_dict(), tmp_path / "vae" / "diffusion_pytorch_model.bin")
    loaded = mvae.load_vae(str(tmp_path / "vae"))
    assert mvae.weights_sha256(loaded) == mvae.weights_sha256(fresh) != mvae.weights_sha256(stale)


def test_a_folder_whose_config_names_no_class_is_an_autoencoder_kl(tmp_path, tiny_vae):
    saved = random_vae(tiny_vae[0], seed=5)
    saved.save_pretrained(str(tmp_path / "vae"))
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    del config["_class_name"]
    (tmp_path / "vae" / "config.json").write_text(json.dumps(config))
    loaded = mvae.load_vae(str(tmp_path / "vae"))
    assert mvae.weights_sha256(loaded) == mvae.weights_sha256(saved)
