"""The adapters in bf16 on a GPU: ``MeanFlowLoss(jvp=func_jvp)`` under ``mfkernels.patch_sdpa``
(Triton kernels) against the float64 model under math attention. As for every kernel (the
flash-attention rule, docs/design.md section 3), the error of the loss and of each parameter's
gradient is held to docs/design.md's bf16 tolerance or, where bf16 itself is coarser, to twice
the error of the same model run in bf16 under math attention."""

import copy

import pytest
import torch
from numerics import TOL, needs_triton, rel_err
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels
from meanflow.adapters import ADAPTERS, AdapterConfig
from meanflow.loss import MeanFlowLoss, func_jvp

# 64 tokens of head dim 64 (the kernels' tuned range), two blocks, on 16 x 16 x 4 latents.
MODELS = {
    "diffusers.DiTTransformer2DModel": dict(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=64,
        num_layers=2,
        out_channels=8,
        time_scale=1.0,
    ),
    "timm.VisionTransformer": dict(patch_size=2, embed_dim=128, depth=2, num_heads=2),
}
NUM_CLASSES = 10


def loss_and_grads(model, objective, x, y, noise):
    model.zero_grad()
    loss, _ = objective(model, x, y, noise=noise)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def bf16_errors(model_class, device, backend):
    """``{name: (error of ours, error of bf16 math)}`` for the loss and every gradient, each
    relative to the float64 value's max abs (floored at 1e-3 of the largest gradient)."""
    pytest.importorskip(ADAPTERS[model_class].library)
    torch.manual_seed(0)
    model = AdapterConfig(model_class, 16, 4, NUM_CLASSES, MODELS[model_class]).build()
    with torch.no_grad():  # zero-initialised layers (the head, adaLN): random weights everywhere
        for p in model.parameters():
            p.normal_(0, 0.05)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, 16, 16, generator=generator, dtype=torch.float64).to(device)
    y = torch.randint(0, NUM_CLASSES + 1, (8,), generator=generator).to(device)
    objective = MeanFlowLoss(jvp=func_jvp, ratio_r_neq_t=0.5)
    noise = objective.sample_noise(x, torch.Generator(device).manual_seed(5))
    bf16_noise = {k: v.bfloat16() if v.is_floating_point() else v for k, v in noise.items()}

    reference = copy.deepcopy(model).to(device, torch.float64)
    plain = copy.deepcopy(model).to(device, torch.bfloat16)
    ours = mfkernels.patch_sdpa(copy.deepcopy(model).to(device, torch.bfloat16), backend)
    with sdpa_kernel(SDPBackend.MATH):
        ref = loss_and_grads(reference, objective, x, y, noise)
        math = loss_and_grads(plain, objective, x.bfloat16(), y, bf16_noise)
    got = loss_and_grads(ours, objective, x.bfloat16(), y, bf16_noise)

    largest = max(g.abs().max().item() for g in ref[1].values())
    errors = {"loss": (rel_err(got[0], ref[0]), rel_err(math[0], ref[0]))}
    for name, grad in ref[1].items():
        floor = 1e-3 * largest
        errors[name] = (rel_err(got[1][name], grad, floor), rel_err(math[1][name], grad, floor))
    return errors


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("model_class", sorted(MODELS))
def test_gpu_bf16_loss_and_grads_match_math(model_class):
    errors = bf16_errors(model_class, "cuda", "triton")
    bad = {k: e for k, e in errors.items() if not e[0] <= max(TOL[torch.bfloat16], 2 * e[1])}
    assert not bad, f"errors (ours, bf16 math) over max(3e-2, 2 x math): {bad}"
