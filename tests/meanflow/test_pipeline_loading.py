"""MeanFlowPipeline.from_pretrained hands each component what the caller asked for: the dtype
(diffusers' ``torch_dtype``) to the transformer and to a VAE read from a path, the backend,
inference-only weights; a transformer option it cannot honour is refused; and a re-export of
a loaded pipeline does not carry the local path it was read from; a VAE passed in is left as
it is."""

import json

import pytest
import torch

pytest.importorskip("diffusers")

from conftest import random_vae  # noqa: E402

from meanflow import MeanFlowPipeline  # noqa: E402
from meanflow.pipeline import MeanFlowTransformer2DModel  # noqa: E402


@pytest.fixture
def exported(tmp_path, tiny, tiny_vae):
    pipe = MeanFlowPipeline(tiny(in_channels=4), random_vae(tiny_vae[0]))
    pipe.save_pretrained(str(tmp_path / "pipe"))
    pipe.vae.save_pretrained(str(tmp_path / "other-vae"))
    return tmp_path


@pytest.mark.filterwarnings("ignore:`torch_dtype` is deprecated:FutureWarning")
@pytest.mark.parametrize("keyword", ["dtype", "torch_dtype"])  # diffusers' new name, and its old one
def test_the_dtype_reaches_the_transformer_and_the_vae(exported, keyword):
    for vae in (None, str(exported / "other-vae")):  # the folder's own VAE, or one from a path
        pipe = MeanFlowPipeline.from_pretrained(str(exported / "pipe"), vae=vae, **{keyword: torch.float64})
        assert pipe.transformer.dtype == torch.float64
        assert {p.dtype for p in pipe.vae.parameters()} == {torch.float64}


def test_loaded_weights_are_for_inference_and_run_the_backend_asked_for(exported):
    pipe = MeanFlowPipeline.from_pretrained(str(exported / "pipe"), backend="reference")
    assert pipe.transformer.backend == "reference"
    for component in (pipe.transformer, pipe.vae):
        assert not any(p.requires_grad for p in component.parameters())


def test_a_vae_passed_in_keeps_its_autograd_state(exported, tiny_vae):
    """Only what from_pretrained read itself is made inference-only: the caller's own VAE (one
    being fine-tuned) is used as it is, not frozen behind its back."""
    mine = random_vae(tiny_vae[0]).requires_grad_(True)
    pipe = MeanFlowPipeline.from_pretrained(str(exported / "pipe"), vae=mine)
    assert pipe.vae is mine and all(p.requires_grad for p in mine.parameters())
    assert not any(p.requires_grad for p in pipe.transformer.parameters())


def test_a_misspelt_backend_is_refused_before_the_folder_is_read(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of .* got 'trition'"):
        MeanFlowPipeline.from_pretrained(str(tmp_path / "not-yet-exported"), backend="trition")


def test_a_transformer_option_that_needs_diffusers_weights_is_refused(exported):
    folder = str(exported / "pipe" / "transformer")
    for option in ("device_map", "variant", "quantization_config"):
        with pytest.raises(ValueError, match=f"{option} is not supported for a MeanFlow transformer"):
            MeanFlowTransformer2DModel.from_pretrained(folder, **{option: "fp16"})
    with pytest.raises(ValueError, match="use_flashpack is not supported for a MeanFlow transformer"):
        MeanFlowTransformer2DModel.from_pretrained(folder, use_flashpack=True)


def test_a_re_export_does_not_record_where_it_was_read_from(exported):
    loaded = MeanFlowPipeline.from_pretrained(str(exported / "pipe"))
    loaded.save_pretrained(str(exported / "again"))
    index = json.loads((exported / "again" / "model_index.json").read_text())
    assert "_name_or_path" not in index
    assert index == json.loads((exported / "pipe" / "model_index.json").read_text())
