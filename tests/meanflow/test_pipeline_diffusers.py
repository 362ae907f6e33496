"""MeanFlowPipeline as a diffusers DiffusionPipeline: config, dtype and device moves, the
progress bar, diffusers' own loader, guidance_scale, and class names in calls."""

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import DiffusionPipeline  # noqa: E402

from meanflow import MeanFlowPipeline, sample  # noqa: E402
from meanflow.vae import load_vae  # noqa: E402

NAMES = {0: "tench, n01440764", 1: "goldfish, n01443537", 2: "crane", 3: "crane", 4: "n01484850"}


def latent_pipe(tiny, tiny_vae, **kw):
    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", tiny_vae[0])
    pipe = MeanFlowPipeline(tiny(in_channels=4), vae, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """diffusers copies a folder's pipeline file into its modules cache: a temporary one here."""
    import diffusers.utils.dynamic_modules_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # diffusers appends the cache to it


def test_a_diffusion_pipeline_with_config_moves_and_progress_bar(tiny, tiny_vae, capfd):
    pipe = latent_pipe(tiny, tiny_vae)
    assert isinstance(pipe, DiffusionPipeline)
    assert pipe.config["vae"] == ("diffusers", "AutoencoderKL") and pipe.config.scaling_factor == 0.18215
    assert pipe.enable_model_cpu_offload.__func__ is DiffusionPipeline.enable_model_cpu_offload
    assert pipe.model_cpu_offload_seq == "transformer->vae"
    capfd.readouterr()
    pipe.to("cpu")
    assert capfd.readouterr().err == ""  # no "kept in float32" warning for a device move
    want = pipe([0, 1], generator=gen(), output_type="pt").images
    assert capfd.readouterr().err == ""  # the progress bar is off
    pipe.to(torch.float64)
    assert pipe.dtype == pipe.transformer.dtype == pipe.vae.dtype == torch.float64
    got = pipe([0, 1], generator=gen(), output_type="pt").images
    assert torch.allclose(got.float(), want, atol=1e-4)
    pipe.set_progress_bar_config(disable=False)
    pipe([0], num_inference_steps=2, generator=gen())
    assert "2/2" in capfd.readouterr().err


def test_diffusers_loader_reads_the_folder_offline(tmp_path, tiny, tiny_vae, modules_cache):
    pipe = latent_pipe(tiny, tiny_vae, id2label=NAMES)
    pipe.save_pretrained(str(tmp_path / "pipe"))
    want = pipe([0, 1], generator=gen(), output_type="np").images
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(str(tmp_path / "pipe"))
    again = DiffusionPipeline.from_pretrained(str(tmp_path / "pipe"), trust_remote_code=True)
    assert type(again) is MeanFlowPipeline and again.id2label == NAMES
    again.set_progress_bar_config(disable=True)
    assert np.allclose(
        again(["tench", "goldfish"], generator=gen(), output_type="np").images, want, atol=1e-6
    )
    # diffusers' loader given another VAE keeps the folder's scale and shift (model_index.json)
    with pytest.warns(UserWarning, match="RANDOM"):
        shifted = load_vae("random", {**tiny_vae[0], "scaling_factor": 0.5, "shift_factor": 0.25})
    other = DiffusionPipeline.from_pretrained(str(tmp_path / "pipe"), trust_remote_code=True, vae=shifted)
    assert (other.scaling_factor, other.shift_factor) == (0.18215, 0.0)

    wide = MeanFlowPipeline.from_pretrained(str(tmp_path / "pipe"), dtype=torch.float64)
    assert wide.transformer.dtype == wide.vae.dtype == torch.float64
    with pytest.warns(FutureWarning, match="torch_dtype"):  # diffusers' older spelling still works
        wide = MeanFlowPipeline.from_pretrained(str(tmp_path / "pipe"), torch_dtype=torch.float64)
    assert wide.transformer.dtype == torch.float64
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["_class_name"] == [
        "pipeline_meanflow",
        "MeanFlowPipeline",
    ]


def test_an_export_from_before_loads(tmp_path, tiny):
    """Folders written when the pipeline was not a DiffusionPipeline name the plain DiT."""
    model = tiny(in_channels=3)
    model.save_pretrained(str(tmp_path / "old" / "transformer"))
    index = {"_class_name": "MeanFlowPipeline", "transformer": ["meanflow", "DiT"], "vae": [None, None]}
    index.update(scaling_factor=0.18215, id2label={"0": "zero"})
    (tmp_path / "old" / "model_index.json").write_text(json.dumps(index))
    pipe = MeanFlowPipeline.from_pretrained(str(tmp_path / "old"))
    assert pipe.get_label_ids("zero") == [0]
    noise = torch.randn(1, 3, 8, 8, generator=gen())
    want = (sample(model, torch.tensor([0]), noise=noise) / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(pipe([0], generator=gen(), output_type="pt").images, want, atol=1e-6)


def test_guidance_scale_adds_classifier_free_guidance_on_top(tiny):
    model = tiny(in_channels=3)
    pipe = MeanFlowPipeline(model)
    noise = torch.randn(2, 3, 8, 8, generator=gen(4))
    y, null = torch.tensor([1, 2]), torch.full((2,), model.null_class)
    one = lambda labels: model(noise, torch.zeros(2), torch.ones(2), labels)  # noqa: E731
    u_cond, u_null = one(y).detach(), one(null).detach()
    for scale in (1.0, 0.0, 2.5):
        got = pipe([1, 2], latents=noise, output_type="latent", guidance_scale=scale).images
        want = noise - (u_null + scale * (u_cond - u_null))
        assert torch.allclose(got, want, atol=1e-5), scale
    two = pipe([1, 2], latents=noise, num_inference_steps=2, output_type="latent", guidance_scale=1).images
    assert torch.equal(two, sample(model, y, steps=2, noise=noise))
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
        pipe([1], guidance_scale="4")
    with pytest.raises(ValueError, match="guidance_scale must be 1 for an unconditional model"):
        MeanFlowPipeline(tiny(num_classes=0))(batch_size=1, guidance_scale=4.0)


def test_class_names_in_calls(tiny):
    pipe = MeanFlowPipeline(tiny(in_channels=3), id2label=NAMES)
    by_id = pipe([0, 1, 4], generator=gen(), output_type="pt").images
    by_name = pipe(["n01440764", "goldfish", "n01484850"], generator=gen(), output_type="pt").images
    assert torch.equal(by_id, by_name)
    assert torch.allclose(pipe("tench", generator=gen(), output_type="pt").images, by_id[:1], atol=1e-6)
    assert pipe.get_label_ids(["tench", "n01443537"]) == [0, 1]
    assert pipe.labels["goldfish"] == 1
    with pytest.raises(ValueError, match=r"unknown class names \['zebra'\]"):
        pipe(["tench", "zebra"])
    with pytest.raises(ValueError, match=r"ambiguous class names \{'crane': \[2, 3\]\}"):
        pipe.get_label_ids("crane")
    with pytest.raises(ValueError, match=r"id2label must map class ids in \[0, 4\] to names, got 5"):
        MeanFlowPipeline(tiny(in_channels=3), id2label={5: "five"})
    with pytest.raises(ValueError, match="no id2label; give class ids"):
        MeanFlowPipeline(tiny(in_channels=3)).get_label_ids("n01440764")


def test_the_transformer_shares_the_models_weights(tiny):
    model = tiny(in_channels=3)
    pipe = MeanFlowPipeline(model)
    assert pipe.transformer.x_embedder.proj.weight is model.x_embedder.proj.weight
    assert type(pipe.transformer).__name__ == "MeanFlowTransformer2DModel"
    pipe([0], generator=gen())
    assert not pipe.transformer.training  # a call leaves the mode as it found it
    pipe.to(torch.float64)  # the model moves with the pipeline, buffers too: never half-cast
    assert model.x_embedder.proj.weight.dtype == model.pos_embed.dtype == torch.float64
    assert pipe.transformer.pos_embed is model.pos_embed


def test_model_cpu_offload_hooks_give_the_same_images(tiny, tiny_vae):
    """diffusers' generic offload (accelerate hooks on each component), driven on the CPU."""
    pytest.importorskip("accelerate")
    pipe = latent_pipe(tiny, tiny_vae)
    want = pipe([0, 1], generator=gen(), output_type="pt", guidance_scale=2.0).images
    pipe.enable_model_cpu_offload(device="cpu")
    got = pipe([0, 1], generator=gen(), output_type="pt", guidance_scale=2.0).images
    assert torch.equal(got, want)
