"""MeanFlowPipeline.from_pretrained of a folder that is not whole (a copy cut short, a part
moved away, an index cut short): an error naming the part, never diffusers' fallback of
reading that component from the pipeline folder itself (which names the wrong place, or
loads whatever model lies there)."""

import json
import os
import shutil

import pytest
import torch

pytest.importorskip("diffusers")

from conftest import random_vae  # noqa: E402

from meanflow import MeanFlowPipeline  # noqa: E402


@pytest.fixture
def exported(tmp_path, tiny, tiny_vae):
    """A latent pipeline's folder and the images it gives."""
    pipe = MeanFlowPipeline(tiny(in_channels=4), random_vae(tiny_vae[1]), id2label={0: "zero"})
    pipe.save_pretrained(str(tmp_path / "pipe"))
    images = pipe([0, 2], generator=torch.Generator().manual_seed(0), output_type="pt").images
    return tmp_path / "pipe", pipe, images


def test_a_missing_transformer_is_named(exported, tiny):
    folder, _, _ = exported
    shutil.rmtree(folder / "transformer")
    with pytest.raises(FileNotFoundError, match=r"pipe/transformer not found: a MeanFlowPipeline folder"):
        MeanFlowPipeline.from_pretrained(str(folder))
    # even with a DiT folder's files lying in the pipeline folder itself: never read from there
    tiny(in_channels=4, seed=3).save_pretrained(str(folder / "other"))
    for name in ("config.json", "model.safetensors"):
        os.rename(folder / "other" / name, folder / name)
    with pytest.raises(FileNotFoundError, match=r"pipe/transformer not found"):
        MeanFlowPipeline.from_pretrained(str(folder))


def test_a_missing_vae_is_named_and_can_be_given(exported, tiny_vae):
    folder, pipe, images = exported
    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match=r"pipe/vae not found, though .*model_index.json names a vae"):
        MeanFlowPipeline.from_pretrained(str(folder))
    again = MeanFlowPipeline.from_pretrained(str(folder), vae=pipe.vae)
    got = again([0, 2], generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.equal(got, images)


def test_an_older_export_without_its_vae_decodes_with_the_given_vaes_shift(exported, tiny_vae):
    """An export from before model_index.json held the shift, its vae/ not copied: nothing
    records the shift its latents were made with, so the VAE given brings its own."""
    folder, _, _ = exported
    shutil.rmtree(folder / "vae")
    index = json.loads((folder / "model_index.json").read_text())
    del index["shift_factor"]
    (folder / "model_index.json").write_text(json.dumps(index))
    shifted = random_vae({**tiny_vae[0], "shift_factor": 0.25})
    assert MeanFlowPipeline.from_pretrained(str(folder), vae=shifted).shift_factor == 0.25


def test_a_pixel_pipeline_needs_no_vae_folder(tmp_path, tiny):
    MeanFlowPipeline(tiny(in_channels=3)).save_pretrained(str(tmp_path / "p"))
    assert json.loads((tmp_path / "p" / "model_index.json").read_text())["vae"] == [None, None]
    assert MeanFlowPipeline.from_pretrained(str(tmp_path / "p")).vae is None


@pytest.mark.parametrize(
    "text, error", [("{", "is not valid JSON"), ("[]", "expected a JSON object, got list")]
)
def test_an_index_this_reader_cannot_take_names_the_file(exported, text, error):
    folder, _, _ = exported
    (folder / "model_index.json").write_text(text)
    with pytest.raises(ValueError, match=rf"pipe/model_index.json.*{error}"):
        MeanFlowPipeline.from_pretrained(str(folder))
