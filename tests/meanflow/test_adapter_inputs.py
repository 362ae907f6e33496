"""The adapters take and check ``(z, r, t, y)`` as the DiT does: times a number, a 0-d or a
``(batch,)`` tensor; labels an integer ``(batch,)`` tensor in ``[0, num_classes]``; a bad input
is an error naming it, before the library model sees it."""

import pytest
import torch

from meanflow.adapters import AdapterConfig

NUM_CLASSES = 10
BUILD = {
    "diffusers.DiTTransformer2DModel": dict(
        num_attention_heads=2, attention_head_dim=8, out_channels=8, num_layers=1, patch_size=2
    ),
    "timm.VisionTransformer": dict(patch_size=2, embed_dim=32, depth=1, num_heads=2),
}


@pytest.fixture(params=sorted(BUILD))
def model(request):
    pytest.importorskip(request.param.split(".")[0])
    model = AdapterConfig(request.param, 8, 4, NUM_CLASSES, BUILD[request.param]).build()
    with torch.no_grad():  # both adapters start at u = 0, which would hide a wrong time
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def test_times_as_numbers_and_scalars(model):
    z, y = torch.randn(4, 4, 8, 8), torch.tensor([0, 3, 9, NUM_CLASSES])
    batched = model(z, torch.full((4,), 0.25), torch.full((4,), 0.75), y)
    assert torch.equal(model(z, 0.25, 0.75, y), batched)
    assert torch.equal(model(z, torch.tensor(0.25), torch.full((4,), 0.75), y), batched)


@pytest.mark.parametrize(
    "y, error, message",
    [
        (torch.tensor([0, 3, 9, NUM_CLASSES + 1]), ValueError, r"y must hold class labels in \[0, 9\]"),
        (torch.tensor([0, 3, 9, -1]), ValueError, r"y must hold class labels in \[0, 9\]"),
        (torch.tensor([7]), ValueError, r"y must have shape \(4,\), got \(1,\)"),
        (torch.zeros(4), TypeError, "y must be an integer tensor"),
    ],
)
def test_bad_labels_name_y(model, y, error, message):
    with pytest.raises(error, match=message):
        model(torch.randn(4, 4, 8, 8), torch.zeros(4), torch.ones(4), y)


def test_bad_times_and_z(model):
    z, y = torch.randn(4, 4, 8, 8), torch.arange(4)
    with pytest.raises(ValueError, match=r"t must have shape \(4,\) or be a scalar, got \(1,\)"):
        model(z, torch.zeros(4), torch.ones(1), y)
    with pytest.raises(ValueError, match=r"r must have shape \(4,\)"):
        model(z, torch.zeros(3), 1.0, y)
    with pytest.raises(TypeError, match="t must be a float or a floating-point tensor"):
        model(z, 0.0, "1", y)
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 4, height, width\)"):
        model(z[:, :3], 0.0, 1.0, y)
    with pytest.raises(
        TypeError, match=r"z has dtype torch.float64 but the model's parameters have torch.float32"
    ):
        model(z.double(), 0.0, 1.0, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts z itself
        assert model(z.bfloat16(), 0.0, 1.0, y).shape == z.shape


@pytest.mark.parametrize("height, width", [(16, 16), (4, 4), (8, 16)])
def test_diffusers_dit_refuses_z_of_another_size_than_its_sample_size(height, width):
    """diffusers' DiT patched a 16x16 z of a sample_size-8 model and gave an answer, from a
    positional embedding made for another grid."""
    pytest.importorskip("diffusers")
    model = AdapterConfig(
        "diffusers.DiTTransformer2DModel", 8, 4, NUM_CLASSES, BUILD["diffusers.DiTTransformer2DModel"]
    ).build()
    with pytest.raises(
        ValueError,
        match=rf"^z is {height}x{width}, but the DiT's sample_size is 8: z must be \(batch, 4, 8, 8\)$",
    ):
        model(torch.randn(2, 4, height, width), torch.zeros(2), torch.ones(2), torch.tensor([1, 2]))
    assert model(torch.randn(2, 4, 8, 8), torch.zeros(2), torch.ones(2), torch.tensor([1, 2])).shape == (
        2,
        4,
        8,
        8,
    )
