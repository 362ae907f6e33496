"""Whole-model sanity for the Triton backend: a tiny DiT with randomised weights gives the
same ``model.jvp`` (value, tangent) and the same parameter gradients with
``backend="triton"`` as with ``backend="reference"``, at fp32 within 1e-5 relative to the
max abs. Ops without a Triton kernel (attention, until it lands) fall back to the reference
with a warning. On the CPU the kernels run in the Triton interpreter."""

import contextlib
import warnings

import pytest
import torch
from numerics import DEVICE, rel_err

from meanflow.models import DiT
from mfkernels import dispatch
from mfkernels.backends.triton.triton_compat import HAS_TRITON

TRITON_OPS = (
    "layernorm_modulate_jvp",
    "layernorm_modulate_backward",
    "gated_residual_jvp",
    "gated_residual_backward",
    "gelu_tanh_jvp",
    "silu_jvp",
    "rms_norm_jvp",
)


def tiny_dit(backend, qk_norm, seed=0):
    """DiT-T/4 on 1x16x16 inputs (16 tokens). adaLN-Zero would zero every modulation and the
    output, hiding bugs, so every parameter is perturbed."""
    torch.manual_seed(seed)
    model = DiT.from_config(
        "DiT-T/4", backend=backend, num_classes=10, in_channels=1, input_size=16, qk_norm=qk_norm
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.to(DEVICE)


def jvp_and_grads(model, inputs, weights):
    z, r, t, y, v = inputs
    u, dudt = model.jvp(z, r, t, y, v)
    assert not dudt.requires_grad
    model.zero_grad()
    (u * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return u.detach(), dudt, grads


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package")
@pytest.mark.parametrize("qk_norm", [False, True])
def test_triton_backend_matches_reference(qk_norm):
    batch = 2
    g = torch.Generator().manual_seed(1)
    z = torch.randn(batch, 1, 16, 16, generator=g).to(DEVICE)
    v = torch.randn(batch, 1, 16, 16, generator=g).to(DEVICE)
    t = torch.tensor([0.7, 0.4]).to(DEVICE)
    r = torch.tensor([0.2, 0.4]).to(DEVICE)
    y = torch.tensor([3, 10]).to(DEVICE)  # 10 is the null class
    weights = torch.randn(batch, 1, 16, 16, generator=g).to(DEVICE)
    inputs = (z, r, t, y, v)

    ref = jvp_and_grads(tiny_dit("reference", qk_norm), inputs, weights)
    with contextlib.ExitStack() as stack, warnings.catch_warnings():
        calls = _count_triton_calls(stack)
        warnings.filterwarnings("ignore", message=".*attention.*using 'reference'")
        out = jvp_and_grads(tiny_dit("triton", qk_norm), inputs, weights)

    ran = {op for op, n in calls.items() if n}
    assert ran == set(TRITON_OPS) - ({"rms_norm_jvp"} if not qk_norm else set()), calls
    assert rel_err(out[0], ref[0]) <= 1e-5, "u"
    assert rel_err(out[1], ref[1]) <= 1e-5, "du/dt"
    assert out[2].keys() == ref[2].keys()
    worst = max(ref[2], key=lambda n: rel_err(out[2][n], ref[2][n]))
    assert rel_err(out[2][worst], ref[2][worst]) <= 1e-5, f"gradient of {worst}"


def _count_triton_calls(stack):
    """Counts the calls that really reach each Triton implementation (no silent fallback),
    while ``stack`` (a contextlib.ExitStack) is open."""
    calls = dict.fromkeys(TRITON_OPS, 0)
    for op in TRITON_OPS:
        impl = dispatch.lookup(op, "triton")

        def counted(*args, _op=op, _fn=impl.fn):
            calls[_op] += 1
            return _fn(*args)

        stack.enter_context(dispatch.substitute(op, "triton", counted, impl.unsupported))
    return calls
