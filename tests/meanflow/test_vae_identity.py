"""What a latent manifest records of its VAE (vae_identity) and how a VAE is checked against
that record (vae_mismatch, check_vae): an absolute weights path, config keys only one diffusers
version has left out, another VAE refused (or warned, not strict), a record without a hash
checked by its config with a warning."""

import json
import os

import pytest

from meanflow import vae as mvae

pytest.importorskip("diffusers")


@pytest.fixture
def vae(tiny_vae):
    with pytest.warns(UserWarning, match="RANDOM"):
        return mvae.load_vae("random", tiny_vae[0])


def test_the_weights_path_is_recorded_absolute(tmp_path, vae, monkeypatch):
    vae.save_pretrained(str(tmp_path / "vae"))
    monkeypatch.chdir(tmp_path)
    record = mvae.vae_identity(vae, os.path.join("vae", "diffusion_pytorch_model.safetensors"))
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    assert record["weights"] == str(weights) and record["bytes"] == weights.stat().st_size
    assert record["sha256"] == mvae.weights_sha256(vae)


def test_a_record_read_back_from_json_matches_its_vae(tiny_vae):
    """A config given with tuples (diffusers' own defaults are tuples) is recorded as JSON
    reads it back: lists, so the manifest's record still matches the very VAE."""
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in tiny_vae[0].items()}
    with pytest.warns(UserWarning, match="RANDOM"):
        vae = mvae.load_vae("random", config)
    record = json.loads(json.dumps(mvae.vae_identity(vae, mvae.RANDOM)))
    assert mvae.vae_mismatch(vae, record) is None


def test_config_keys_only_the_record_has_are_not_compared(vae):
    record = mvae.vae_identity(vae, mvae.RANDOM)
    newer = {**record, "config": {**record["config"], "a_key_of_another_version": 1}}
    assert mvae.vae_mismatch(vae, newer) is None
    other = {**record, "config": {**record["config"], "latent_channels": 8}}
    assert mvae.vae_mismatch(vae, other) == "their configs differ in latent_channels"


def test_another_vae_is_refused_or_warned_naming_both(vae):
    record = {**mvae.vae_identity(vae, mvae.RANDOM), "sha256": "ab" * 32, "weights": "/vaes/ema"}
    message = r"VAE 'here' is not the VAE the latents were made with, '/vaes/ema' \(sha256 abababababab\)"
    with pytest.raises(ValueError, match=message + ": their weights differ"):
        mvae.check_vae(vae, record, "here")
    with pytest.warns(UserWarning, match=message):
        mvae.check_vae(vae, record, "here", strict=False)


def test_a_record_without_a_hash_is_checked_by_its_config_with_a_warning(vae, recwarn):
    record = mvae.vae_identity(vae, mvae.RANDOM)
    mvae.check_vae(vae, record, "here")
    assert not recwarn.list  # a hash that matches: nothing to say
    del record["sha256"]
    with pytest.warns(UserWarning, match="cannot verify the weights of VAE 'here': .* records no hash"):
        mvae.check_vae(vae, record, "here")
