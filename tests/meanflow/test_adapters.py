"""A diffusers ``DiTTransformer2DModel`` trained with ``MeanFlowLoss(jvp=func_jvp)`` through
:class:`meanflow.adapters.DiffusersDiT` under ``mfkernels.patch_sdpa``: the loss and every
parameter's gradient match the same model under math attention in float64 (docs/design.md
section 3's tolerance for the input dtype), on the reference backend and the Triton kernels."""

import copy

import pytest
import torch
from numerics import assert_close, needs_triton
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels
from meanflow.adapters import DiffusersDiT
from meanflow.loss import MeanFlowLoss, func_jvp

diffusers = pytest.importorskip("diffusers")

NUM_CLASSES = 10


def tiny_dit(head_dim=16, out_channels=8) -> DiffusersDiT:
    """A two-block DiT on 8 x 8 x 4 latents (16 tokens), learned sigma as in DiT checkpoints."""
    transformer = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=head_dim,
        in_channels=4,
        out_channels=out_channels,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=NUM_CLASSES,
    )
    model = DiffusersDiT(transformer)
    # diffusers zero-initialises the adaLN and output layers and we the interval embedding:
    # random weights everywhere, so that every path (r through h included) carries a gradient.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def batch(dtype):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 4, 8, 8, generator=generator, dtype=dtype)
    y = torch.tensor([1, 4, 7, NUM_CLASSES - 1])
    return x, y


def loss_and_grads(model, objective, x, y, noise):
    model.zero_grad()
    loss, _ = objective(model, x, y, noise=noise)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def objective():
    return MeanFlowLoss(jvp=func_jvp, ratio_r_neq_t=0.5, class_dropout=0.25)


def test_interval_embedding_starts_at_zero():
    """At initialisation u(z, r, t) does not depend on r: the DiT of t alone."""
    transformer = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=1, sample_size=4,
        patch_size=2, num_embeds_ada_norm=NUM_CLASSES,
    )  # fmt: skip
    with torch.no_grad():
        for p in transformer.parameters():  # diffusers zero-initialises the output layers
            p.normal_(0, 0.2)
    plain = copy.deepcopy(transformer).eval()
    model = DiffusersDiT(transformer).eval()
    z = torch.randn(2, 4, 4, 4)
    t, y = torch.tensor([0.9, 0.5]), torch.tensor([2, NUM_CLASSES])
    u_r0 = model(z, torch.zeros(2), t, y)
    assert torch.equal(u_r0, model(z, torch.tensor([0.3, 0.1]), t, y))
    assert torch.equal(u_r0, plain(z, timestep=t * 1000, class_labels=y, return_dict=False)[0])


@pytest.mark.parametrize(
    "backend,dtype", [("reference", torch.float64), pytest.param("triton", torch.float32, marks=needs_triton)]
)
def test_func_jvp_loss_and_grads_match_math_attention(backend, dtype):
    reference = tiny_dit().double()
    x, y = batch(torch.float64)
    loss_fn = objective()
    noise = loss_fn.sample_noise(x, torch.Generator().manual_seed(5))
    with sdpa_kernel(SDPBackend.MATH):
        ref_loss, ref_grads = loss_and_grads(reference, loss_fn, x, y, noise)

    model = mfkernels.patch_sdpa(copy.deepcopy(reference).to(dtype), backend)
    noise = {k: v.to(dtype) if v.is_floating_point() else v for k, v in noise.items()}
    loss, grads = loss_and_grads(model, loss_fn, x.to(dtype), y, noise)
    assert_close("loss", loss, ref_loss, dtype)
    # The key bias's gradient is zero in exact arithmetic (softmax ignores a shift shared by
    # all keys): each gradient is measured against at least 1e-3 of the largest one.
    largest = max(g.abs().max().item() for g in ref_grads.values())
    for name, grad in grads.items():
        assert_close(name, grad, ref_grads[name], dtype, floor=1e-3 * largest)


def test_each_time_reaches_its_embedding():
    """Every block's embedding projects two timesteps (the final layer reuses block 0's): the
    DiT's ``1000 t`` for its own time embedding and ``1000 h``, ``h = t - r``, for the interval's."""
    model = tiny_dit().double().eval()
    projected = []
    for block in model.transformer.transformer_blocks:
        block.norm1.emb.inner.time_proj.register_forward_pre_hook(lambda m, args: projected.append(args[0]))
    z, y = batch(torch.float64)
    t = torch.tensor([0.9, 0.5, 1.0, 0.3], dtype=torch.float64)
    r = torch.tensor([0.1, 0.5, 0.0, 0.2], dtype=torch.float64)
    model(z, r, t, y)
    times, intervals = 1000 * t, 1000 * (t - r)
    assert len(projected) >= 2 * len(model.transformer.transformer_blocks)
    for value in projected:
        assert torch.allclose(value, times, rtol=1e-12) or torch.allclose(value, intervals, rtol=1e-12)
    assert sum(torch.allclose(v, intervals, rtol=1e-12) for v in projected) == len(projected) // 2


def test_learned_sigma_gives_the_first_channels():
    """A learned-sigma DiT (``2 C`` outputs, as DiT checkpoints) gives its first ``C`` channels,
    the prediction, not sigma's: at initialisation u is the DiT's own output there."""
    transformer = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
        sample_size=4, patch_size=2, num_embeds_ada_norm=NUM_CLASSES,
    )  # fmt: skip
    with torch.no_grad():
        for p in transformer.parameters():
            p.normal_(0, 0.2)
    plain = copy.deepcopy(transformer).eval()
    model = DiffusersDiT(transformer).eval()
    z, t, y = torch.randn(2, 4, 4, 4), torch.tensor([0.9, 0.5]), torch.tensor([2, NUM_CLASSES])
    full = plain(z, timestep=t * 1000, class_labels=y, return_dict=False)[0]
    assert full.shape[1] == 8
    assert torch.equal(model(z, t / 2, t, y), full[:, :4])
