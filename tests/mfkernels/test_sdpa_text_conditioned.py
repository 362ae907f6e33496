"""``torch.func.jvp`` through a text-conditioned diffusers transformer under
``mfkernels.patch_sdpa``: PixArt-alpha's blocks cross-attend to padded captions with an
``attn_mask`` (a float bias per key, broadcast over queries), self-attend without one. Against
the same model under math attention in float64: the output, its tangent and every parameter's
gradient of a MeanFlow-shaped loss, with every attention call on the fused kernels."""

import copy
import warnings

import pytest
import torch
from numerics import DEVICE, assert_close
from test_sdpa_forward_ad import BACKENDS, count_attention_calls
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels

diffusers = pytest.importorskip("diffusers")

CAPTION_TOKENS, CAPTION_CHANNELS = 7, 12


def tiny_pixart() -> torch.nn.Module:
    torch.manual_seed(0)
    model = diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=16, caption_channels=CAPTION_CHANNELS, sample_size=8, patch_size=2,
        norm_type="ada_norm_single", use_additional_conditions=False,
    )  # fmt: skip
    with torch.no_grad():  # zero-initialised heads would make the output 0: put the math to work
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


class Velocity(torch.nn.Module):
    """The network as a function of the latents and the caption, the padding mask fixed."""

    def __init__(self, model, mask, timestep):
        super().__init__()
        self.model, self.mask, self.timestep = model, mask, timestep

    def forward(self, latents, caption):
        conditions = {"resolution": None, "aspect_ratio": None}
        out = self.model(
            latents, encoder_hidden_states=caption, encoder_attention_mask=self.mask,
            timestep=self.timestep, added_cond_kwargs=conditions,
        )  # fmt: skip
        return out.sample


def loss_and_grads(model, primals, tangents):
    """A MeanFlow-shaped loss, the value against its stop-gradient tangent, and its gradients."""
    model.zero_grad()
    out, out_dot = torch.func.jvp(model, primals, tangents)
    loss = (out - out_dot.detach()).square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), out_dot, grads


@pytest.mark.parametrize("backend,dtype", BACKENDS)
def test_pixart_with_padded_captions_matches_math_attention(backend, dtype, monkeypatch):
    calls = count_attention_calls(monkeypatch)
    mask = torch.ones(2, CAPTION_TOKENS, device=DEVICE)
    mask[1, 4:] = 0  # the second caption is three tokens shorter
    timestep = torch.tensor([10.0, 500.0], device=DEVICE)
    reference = Velocity(tiny_pixart().to(DEVICE), mask, timestep).double()
    latents, latents_dot = torch.randn(2, 2, 4, 8, 8, dtype=torch.float64, device=DEVICE)
    caption, caption_dot = torch.randn(
        2, 2, CAPTION_TOKENS, CAPTION_CHANNELS, dtype=torch.float64, device=DEVICE
    )
    primals, tangents = (latents, caption), (latents_dot, caption_dot)
    with sdpa_kernel(SDPBackend.MATH):
        ref_out, ref_out_dot, ref_grads = loss_and_grads(reference, primals, tangents)

    model = mfkernels.patch_sdpa(copy.deepcopy(reference).to(dtype), backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, out_dot, grads = loss_and_grads(
            model, tuple(t.to(dtype) for t in primals), tuple(t.to(dtype) for t in tangents)
        )
    assert not [w for w in caught if "mfkernels" in str(w.message)]  # nothing fell back to math
    assert len(calls) == 4  # two blocks, self- and cross-attention each
    assert_close("out", out, ref_out, dtype)
    assert_close("out'", out_dot, ref_out_dot, dtype)
    assert grads.keys() == ref_grads.keys() and len(grads) > 20
    for name, grad in grads.items():
        assert_close(name, grad, ref_grads[name], dtype)
