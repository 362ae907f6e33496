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


def test_folder_is_loaded_strictly(tmp_path, tiny_vae):
    """A diffusers folder is read like a weights file: every weight from the folder, or one
    ValueError naming it (diffusers' own loader fills gaps with random weights and only logs)."""
    diffusers = pytest.importorskip("diffusers")
    import json

    from safetensors.torch import load_file, save_file

    config, _ = tiny_vae
    saved = random_vae(config)
    saved.save_pretrained(str(tmp_path / "full"))
    loaded = mvae.load_vae(str(tmp_path / "full"))
    assert mvae.weights_sha256(loaded) == mvae.weights_sha256(saved)

    nodec = tmp_path / "nodec"  # an encoder-only copy
    saved.save_pretrained(str(nodec))
    weights = str(nodec / "diffusion_pytorch_model.safetensors")
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("decoder.")}, weights)
    with pytest.raises(ValueError, match=r"VAE folder .*nodec.* do not fit .*Missing key.*decoder\."):
        mvae.load_vae(str(nodec))

    mismatched = tmp_path / "mismatched"  # config.json with other block sizes than the weights
    saved.save_pretrained(str(mismatched))
    cfg = json.loads((mismatched / "config.json").read_text())
    (mismatched / "config.json").write_text(json.dumps({**cfg, "block_out_channels": [16, 16]}))
    with pytest.raises(ValueError, match=r"VAE folder .*mismatched.* do not fit .*size mismatch") as e:
        mvae.load_vae(str(mismatched))
    assert "\n" not in str(e.value)

    unet = tmp_path / "unet"  # a pipeline's unet/ given for its vae/
    diffusers.UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
    ).save_pretrained(str(unet))
    with pytest.raises(ValueError, match=r"VAE folder .*unet.* holds a 'UNet2DModel', not an AutoencoderKL"):
        mvae.load_vae(str(unet))

    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match=r"noweights.* has no diffusion_pytorch_model"):
        mvae.load_vae(str(tmp_path / "noweights"))


def test_truncated_safetensors_names_the_file(tmp_path, tiny_vae):
    pytest.importorskip("diffusers")
    from safetensors.torch import save_file

    config, path = tiny_vae
    weights = tmp_path / "vae.safetensors"
    save_file(dict(random_vae(config).state_dict()), str(weights))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(ValueError, match=r"cannot read VAE weights .*vae\.safetensors.*truncated"):
        mvae.load_vae(str(weights), path)


def test_shifted_latents_decode_as_the_vae_encoded_them(tiny_vae):
    """Latents made as ``(z - shift) * scale`` (a shifted VAE's: FLUX's kind) decode as ``z``,
    with the scale and shift of the VAE's config or given."""
    pytest.importorskip("diffusers")
    config, _ = tiny_vae
    vae = random_vae({**config, "scaling_factor": 0.3611, "shift_factor": 0.1159})
    assert mvae.latent_scale(vae) == (0.3611, 0.1159)
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    latents = (z - 0.1159) * 0.3611
    with torch.no_grad():
        want = vae.decode(z).sample.float().clamp(-1, 1)
    assert torch.allclose(mvae.decode_latents(vae, latents), want, atol=1e-5)
    given = mvae.decode_latents(vae, (z - 0.5) * 2.0, scale_factor=2.0, shift_factor=0.5)
    assert torch.allclose(given, want, atol=1e-5)


@pytest.mark.parametrize("force_upcast", [True, False])
def test_a_float16_vae_that_asks_for_it_decodes_in_float32(tiny_vae, force_upcast):
    """diffusers' pipelines decode a float16 VAE whose config says ``force_upcast`` in float32
    (sd-vae-ft-ema's: AutoencoderKL's default), where float16 overflows; its weights stay
    float16 after, as the caller made them."""
    pytest.importorskip("diffusers")
    config, _ = tiny_vae
    vae = random_vae({**config, "force_upcast": force_upcast})
    full = random_vae({**config, "force_upcast": force_upcast})
    vae.to(torch.float16)
    seen = []
    vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    images = mvae.decode_latents(vae, z)
    assert seen == [torch.float32 if force_upcast else torch.float16]
    assert all(p.dtype == torch.float16 for p in vae.parameters())
    if force_upcast:  # float32 arithmetic on the float16 weights, as decoded by the float32 VAE
        with torch.no_grad():
            full.load_state_dict({k: v.float() for k, v in vae.state_dict().items()})
        torch.testing.assert_close(images, mvae.decode_latents(full, z), atol=1e-5, rtol=0)


def test_weights_hash_tells_which_tensor_is_which(tiny_vae):
    """Two same-shaped tensors swapped are another VAE; the same weights in float64 are not."""
    pytest.importorskip("diffusers")
    config, _ = tiny_vae
    vae = random_vae(config)
    before = mvae.weights_sha256(vae)
    assert mvae.weights_sha256(random_vae(config, dtype=torch.float64)) == before
    shapes = {}
    for name, tensor in vae.state_dict().items():
        shapes.setdefault(tuple(tensor.shape), []).append(name)
    first, second = next(names for names in shapes.values() if len(names) > 1)[:2]
    state = vae.state_dict()
    state[first], state[second] = state[second].clone(), state[first].clone()
    assert not torch.equal(state[first], state[second])
    vae.load_state_dict(state)
    assert mvae.weights_sha256(vae) != before


def test_random_weights_do_not_depend_on_the_global_seed(tiny_vae):
    """``load_vae("random")`` draws from seed 0 whatever the caller's RNG state, and leaves that
    state as it was: a test's or a dry run's VAE is the same in every process."""
    pytest.importorskip("diffusers")
    config, _ = tiny_vae
    weights = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        weights.append(random_vae(config).state_dict())
        assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(seed)))
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
