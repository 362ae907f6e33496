"""MeanFlowPipeline: the diffusers-style call, output types, VAE decoding, save/load round trip."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import random_vae

from meanflow import MeanFlowPipeline, sample
from meanflow.checkpoint import EXPORT_MARKER
from meanflow.vae import load_vae


@pytest.fixture
def vae_config(tiny_vae):
    """A diffusers AutoencoderKL config (2x upsampling, 4 latent channels), no weights."""
    pytest.importorskip("diffusers")
    return tiny_vae[1]


def rgb_model(tiny, **kw):
    return tiny(in_channels=3, **kw)


def test_call_matches_the_sampler(tiny):
    model = rgb_model(tiny)
    pipe = MeanFlowPipeline(model)
    labels = [0, 3, 4]
    out = pipe(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(5), output_type="np")
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    want = (sample(model, torch.tensor(labels), steps=2, noise=noise) / 2 + 0.5).clamp(0, 1)
    assert out.images.shape == (3, 8, 8, 3) and out.images.dtype == np.float32
    assert np.allclose(out.images, want.permute(0, 2, 3, 1).numpy(), atol=1e-6)

    pil = pipe(labels, generator=torch.Generator().manual_seed(5)).images
    assert len(pil) == 3 and pil[0].size == (8, 8) and pil[0].mode == "RGB"
    (pt,) = pipe(labels, generator=torch.Generator().manual_seed(5), output_type="pt", return_dict=False)
    assert pt.shape == (3, 3, 8, 8) and 0 <= pt.min() and pt.max() <= 1
    one_step = (sample(model, torch.tensor(labels), steps=1, noise=noise) / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(pt, one_step, atol=1e-6)
    assert np.array_equal(np.asarray(pil[1]), (pt[1].permute(1, 2, 0) * 255).round().byte().numpy())


def test_one_generator_per_image(tiny):
    pipe = MeanFlowPipeline(rgb_model(tiny))
    gens = lambda: [torch.Generator().manual_seed(s) for s in (10, 11)]  # noqa: E731
    both = pipe([1, 2], generator=gens(), output_type="pt").images
    first = pipe([1], generator=gens()[:1], output_type="pt").images
    assert torch.allclose(both[:1], first, atol=1e-6)
    with pytest.raises(ValueError, match="2 generators for 1 images"):
        pipe([1], generator=gens())


def test_gray_and_unconditional(tiny):
    pipe = MeanFlowPipeline(tiny(num_classes=0))
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].mode == "L"
    with pytest.raises(ValueError, match="class_labels must be None"):
        pipe([1])
    with pytest.raises(ValueError, match="batch_size"):
        pipe()


def test_latent_model_with_vae_round_trip(tmp_path, vae_config, tiny):
    vae = random_vae(vae_config)
    model = tiny(in_channels=4)
    pipe = MeanFlowPipeline(model, vae, id2label={0: "tench, Tinca tinca", 1: "goldfish"})
    assert pipe.scaling_factor == 0.18215
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    images = pipe([0, 1], generator=gen(), output_type="np").images
    assert images.shape == (2, 16, 16, 3)
    latents = pipe([0, 1], generator=gen(), output_type="latent").images
    with torch.no_grad():
        decoded = vae.decode(latents / 0.18215).sample
    assert np.allclose(images, (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert pipe.get_label_ids(["goldfish", "Tinca tinca"]) == [1, 0]

    pipe.save_pretrained(str(tmp_path / "pipe"))
    listing = [EXPORT_MARKER, "model_index.json", "pipeline_meanflow.py", "transformer", "vae"]
    assert sorted(os.listdir(tmp_path / "pipe")) == listing
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["transformer"] == ["meanflow.pipeline", "MeanFlowTransformer2DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    again = MeanFlowPipeline.from_pretrained(str(tmp_path / "pipe"))
    assert np.array_equal(again([0, 1], generator=gen(), output_type="np").images, images)
    assert again.get_label_ids("goldfish") == [1]

    from safetensors.torch import load_file, save_file

    weights = str(tmp_path / "pipe" / "vae" / "diffusion_pytorch_model.safetensors")
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("decoder.")}, weights)
    with pytest.raises(ValueError, match=r"VAE folder .*vae.* do not fit .*Missing key.*decoder\."):
        MeanFlowPipeline.from_pretrained(str(tmp_path / "pipe"))  # not a random decoder


def test_pixel_pipeline_round_trip(tmp_path, tiny):
    pipe = MeanFlowPipeline(rgb_model(tiny))
    pipe.save_pretrained(str(tmp_path / "p"))
    listing = [EXPORT_MARKER, "model_index.json", "pipeline_meanflow.py", "transformer"]
    assert sorted(os.listdir(tmp_path / "p")) == listing
    again = MeanFlowPipeline.from_pretrained(str(tmp_path / "p"))
    a = pipe([2, 3], generator=torch.Generator().manual_seed(1), output_type="pt").images
    b = again([2, 3], generator=torch.Generator().manual_seed(1), output_type="pt").images
    assert torch.equal(a, b)


def test_a_folder_replaced_at_each_read_is_read_again_then_refused(tmp_path, vae_config, tiny, monkeypatch):
    """Each read gets the caller's arguments as given (never the VAE an earlier read took from
    the replaced folder); three replacements in a row are a ValueError, not a torn pipeline."""
    import meanflow.interchange as interchange

    vae = random_vae(vae_config)
    MeanFlowPipeline(tiny(in_channels=4), vae).save_pretrained(str(tmp_path / "p"))
    identity, identities, reads = interchange._folder_identity, iter(range(100)), []
    replaced = {str(tmp_path / "p")}  # the pipeline folder only: its transformer/ stays
    monkeypatch.setattr(
        interchange, "_folder_identity", lambda d: next(identities) if d in replaced else identity(d)
    )
    read_folder = MeanFlowPipeline._read_folder.__func__
    monkeypatch.setattr(
        MeanFlowPipeline,
        "_read_folder",
        classmethod(lambda cls, *args: reads.append(args) or read_folder(cls, *args)),
    )
    with pytest.raises(ValueError, match="p was replaced while it was read, three times"):
        MeanFlowPipeline.from_pretrained(str(tmp_path / "p"), dtype=torch.float64)
    assert [(v, kw) for _, v, kw in reads] == [(None, {"dtype": torch.float64})] * 3
    with pytest.raises(ValueError, match="three times"):
        MeanFlowPipeline.from_pretrained(str(tmp_path / "p"), vae=vae)
    assert all(args[1] is vae and args[2] == {} for args in reads[3:]) and len(reads) == 6


def test_bad_inputs(tmp_path, vae_config, tiny):
    pipe = MeanFlowPipeline(rgb_model(tiny))
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 4\]"):
        pipe([7])
    with pytest.raises(TypeError, match="class_labels"):
        pipe([0.5])
    for flags in ([True], [True, 3], (2, False)):  # a mixed list was read as [1, 3]
        with pytest.raises(TypeError, match="class_labels must be class ids or names, not bools"):
            pipe(flags)
    with pytest.raises(ValueError, match="output_type"):
        pipe([1], output_type="jpeg")
    with pytest.raises(ValueError, match="unknown class names"):
        pipe.get_label_ids("zebra")
    with pytest.raises(ValueError, match="4-channel latents: pass the vae"):
        MeanFlowPipeline(tiny(in_channels=4))
    with pytest.raises(ValueError, match="vae has 4 latent channels, the transformer 3"):
        MeanFlowPipeline(rgb_model(tiny), random_vae(vae_config))
    with pytest.raises(TypeError, match="meanflow DiT"):
        MeanFlowPipeline(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_vae(str(tmp_path / "no-vae"))
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        MeanFlowPipeline.from_pretrained(str(tmp_path))


def test_numbers_must_be_finite(tiny):
    """NaN compares False with every bound: each numeric argument is refused by name, not
    turned into black images."""
    pipe = MeanFlowPipeline(rgb_model(tiny))
    for bad in (float("nan"), float("inf"), -1.0, np.float32("nan")):
        with pytest.raises(ValueError, match=r"guidance_scale must be a finite number >= 0, got"):
            pipe([0, 1], guidance_scale=bad)
    for bad in (float("nan"), float("inf"), 0.0, -0.18215):
        with pytest.raises(ValueError, match=r"scaling_factor must be a finite number > 0"):
            MeanFlowPipeline(rgb_model(tiny), scaling_factor=bad)
    noise = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"latents must have shape \(2, 3, 8, 8\) .*got \(3, 3, 8, 8\)"):
        pipe([0, 1], latents=torch.randn(3, 3, 8, 8))
    noise[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="latents hold NaN"):
        pipe([0, 1], latents=noise)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        MeanFlowPipeline(rgb_model(tiny, num_classes=0))(batch_size=True)


@pytest.mark.gpu
def test_gpu_pipeline(tiny):
    pipe = MeanFlowPipeline(rgb_model(tiny))
    cpu = pipe([0, 1], generator=torch.Generator().manual_seed(0), output_type="pt").images
    pipe.to("cuda")
    gpu = pipe([0, 1], generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)


def test_a_float64_pipeline_casts_the_noise_it_is_given(tiny):
    """float32 latents, or one generator per image, on a pipeline moved to float64 sample in
    float64 (the images come back in float32, as from any pipeline)."""
    model = rgb_model(tiny)
    pipe = MeanFlowPipeline(model).to(torch.float64)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    want = (sample(model, torch.tensor([0, 1]), noise=noise.double()) / 2 + 0.5).clamp(0, 1)
    got = pipe([0, 1], latents=noise, output_type="pt").images
    torch.testing.assert_close(got, want.float(), atol=1e-6, rtol=0)
    per_image = [torch.Generator().manual_seed(7) for _ in range(2)]
    got = pipe([0, 1], generator=per_image, output_type="pt").images
    one = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(7)).double()
    want = (sample(model, torch.tensor([0, 1]), noise=one.repeat(2, 1, 1, 1)) / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(got, want.float(), atol=1e-6, rtol=0)


def test_latents_decode_with_the_vaes_own_scale(tiny_vae, tiny):
    """A VAE whose config has another scaling_factor (SDXL's 0.13025) and a shift_factor
    (FLUX's kind): the model's latents are ``(z - shift) * scale``, decoded as ``z``."""
    pytest.importorskip("diffusers")
    vae = random_vae({**tiny_vae[0], "scaling_factor": 0.13025, "shift_factor": 0.1159})
    pipe = MeanFlowPipeline(tiny(in_channels=4), vae)
    assert pipe.scaling_factor == 0.13025
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    images = pipe([0, 1], generator=gen(), output_type="pt").images
    latents = pipe([0, 1], generator=gen(), output_type="latent").images
    with torch.no_grad():
        decoded = vae.decode(latents / 0.13025 + 0.1159).sample
    assert torch.allclose(images, (decoded / 2 + 0.5).clamp(0, 1), atol=1e-6)


def _decoded_with(vae, latents, scale, shift):
    with torch.no_grad():
        return (vae.decode(latents / scale + shift).sample / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize(
    "trained, given",
    [((0.3611, 0.1159), (0.18215, None)), ((0.18215, None), (0.3611, 0.1159))],
    ids=["shifted-export-unshifted-vae", "unshifted-export-shifted-vae"],
)
def test_another_vae_decodes_with_the_folders_scale_and_shift(tmp_path, tiny_vae, tiny, trained, given):
    """from_pretrained(folder, vae=other): the model's latents are ``(z - shift) * scale`` of
    the VAE it was trained with, which the folder records; the scale was the folder's but the
    shift other's config's, so an SD3/FLUX-style shifted VAE's export read with an unshifted VAE
    (or the reverse) decoded latents off by the shift."""
    pytest.importorskip("diffusers")

    def vae_of(scale, shift):
        return random_vae({**tiny_vae[0], "scaling_factor": scale, "shift_factor": shift})

    MeanFlowPipeline(tiny(in_channels=4), vae_of(*trained)).save_pretrained(str(tmp_path / "pipe"))
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert (index["scaling_factor"], index["shift_factor"]) == (trained[0], trained[1] or 0.0)
    other = vae_of(*given)
    other.save_pretrained(str(tmp_path / "other"))
    for vae in (other, str(tmp_path / "other")):  # a loaded VAE, or one read from a folder
        again = MeanFlowPipeline.from_pretrained(str(tmp_path / "pipe"), vae=vae)
        assert (again.scaling_factor, again.shift_factor) == (trained[0], trained[1] or 0.0)
        images = again([0, 1], generator=torch.Generator().manual_seed(3), output_type="pt").images
        latents = again([0, 1], generator=torch.Generator().manual_seed(3), output_type="latent").images
        want = _decoded_with(again.vae, latents, trained[0], trained[1] or 0.0)
        assert torch.allclose(images, want, atol=1e-6)
        assert not torch.allclose(images, _decoded_with(again.vae, latents, trained[0], given[1] or 0.0))

    # An export from before model_index.json held the shift: its vae/config.json holds it.
    del index["shift_factor"]
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    older = MeanFlowPipeline.from_pretrained(str(tmp_path / "pipe"), vae=other)
    assert older.shift_factor == (trained[1] or 0.0)
    assert MeanFlowPipeline.from_pretrained(str(tmp_path / "pipe")).shift_factor == (trained[1] or 0.0)


def test_the_shift_is_a_finite_number(tiny, tiny_vae):
    pytest.importorskip("diffusers")
    vae = random_vae(tiny_vae[0])
    assert MeanFlowPipeline(tiny(in_channels=4), vae, shift_factor=-0.5).shift_factor == -0.5
    assert MeanFlowPipeline(tiny(in_channels=3)).shift_factor == 0.0
    for bad in (float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="shift_factor must be a finite number"):
            MeanFlowPipeline(tiny(in_channels=4), vae, shift_factor=bad)
