"""LayerNorm + adaLN modulate on rows where ``eps`` decides the result: constant rows (zero
variance), rows of tiny variance, all-zero rows, and a large ``eps``, on every backend that
has the op, forward (value and tangent) and backward, against float64 ``torch.func.jvp`` and
autograd of torch's own ``layer_norm``.

Ordinary rows (std ~2, eps 1e-6) cannot tell ``1 / sqrt(var + eps)`` from
``1 / (sqrt(var) + eps)``: the two differ by ~1e-7 there. On a constant row the first is
``1 / sqrt(eps)`` and the second ``1 / eps``. Errors are measured row by row (a constant
row's tangent is ~1e3 times an ordinary row's, and would hide their errors in a global max).
"""

import warnings

import pytest
import torch
from numerics import DEVICE, needs_triton

import mfkernels
from mfkernels import dispatch
from mfkernels.backends import csrc, torch_ops
from mfkernels.backends.triton.layernorm_modulate import (
    layernorm_modulate_backward_triton,
    layernorm_modulate_jvp_triton,
)
from mfkernels.backends.triton.triton_compat import INTERPRET

DIM = 72
TOKENS = 5
TOL = 1e-5  # fp32 against float64, per row

triton_runs = pytest.mark.skipif(
    DEVICE == "cpu" and not INTERPRET, reason="triton backend needs CUDA or TRITON_INTERPRET=1"
)
needs_cpu_ext = pytest.mark.skipif(not csrc.available(), reason="mfkernels._C is not built")
needs_cuda_ext = pytest.mark.skipif(not csrc.has_cuda(), reason="mfkernels._C built without CUDA")

# backend -> (device, jvp, backward); pytest marks per backend.
BACKENDS = {
    "reference": (DEVICE, torch_ops.layernorm_modulate_jvp, torch_ops.layernorm_modulate_backward),
    "triton": (DEVICE, layernorm_modulate_jvp_triton, layernorm_modulate_backward_triton),
    "cpu": ("cpu", csrc.layernorm_modulate_jvp, csrc.layernorm_modulate_backward),
    "cuda": ("cuda", csrc.layernorm_modulate_jvp, csrc.layernorm_modulate_backward),
}
BACKEND_PARAMS = [
    pytest.param("reference"),
    pytest.param("triton", marks=[needs_triton, triton_runs]),
    pytest.param("cpu", marks=needs_cpu_ext),
    pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda_ext]),
]
EPS_PARAMS = [1e-6, 1e-2]


def edge_rows(device):
    """x ``(4, TOKENS, DIM)``, one kind of row per sample: ordinary (std 2, mean 0.5), a
    different constant per token, a quarter of them plus noise of std ~1e-4, all zeros. Then
    ``x_dot``, ``shift, scale, shift_dot, scale_dot`` ``(4, DIM)`` and ``grad_m`` like x.

    The constants are multiples of 1/8 and the noise is integers times 2^-13 summing to zero
    over each row: every fp32 partial sum is exact, so the kernels' row means are exact.
    Otherwise fp32 rounds a mean c to ~6e-8 c, which the normalised row sees ``1 / sqrt(eps)``
    = 1e3 times larger: an error of the input's rounding, not of the kernel. (The offsets of
    the noisy rows stay below 1: torch's fused LayerNorm backward, which the reference backend
    runs, uses the uncentred ``x`` and loses ~1e-5 at offset / std = 2e4.)"""
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    constants = torch.tensor([-1.75, -0.5, 0.125, 1.375, 3.125])[:, None].expand(TOKENS, DIM)
    steps = torch.randint(-2, 3, (TOKENS, DIM // 2), generator=g)
    steps = torch.cat([steps, -steps], 1)[:, torch.randperm(DIM, generator=g)]
    x = torch.stack(
        [randn(TOKENS, DIM) * 2 + 0.5, constants, constants / 4 + steps * 2.0**-13, torch.zeros(TOKENS, DIM)]
    )
    vectors = [randn(4, DIM) for _ in range(4)]
    tensors = (x, randn(*x.shape), *vectors, randn(*x.shape))
    return [t.to(device) for t in tensors]


def oracle(x, x_dot, shift, scale, shift_dot, scale_dot, grad_m, eps):
    """float64 ``(m, m_dot, dx, dshift, dscale)`` by torch.func.jvp and autograd of torch's
    ``layer_norm`` (not of our reference formulas)."""
    x, x_dot, shift, scale, shift_dot, scale_dot, grad_m = (
        t.double() for t in (x, x_dot, shift, scale, shift_dot, scale_dot, grad_m)
    )

    def primal(x_, shift_, scale_):
        return mfkernels.layernorm_modulate(x_, shift_, scale_, eps=eps)

    m, m_dot = torch.func.jvp(primal, (x, shift, scale), (x_dot, shift_dot, scale_dot))
    _, vjp = torch.func.vjp(primal, x, shift, scale)
    return (m, m_dot, *vjp(grad_m))


def assert_rows_close(name, out, ref, floor):
    """Each row (last dim) within TOL of the reference relative to that row's max abs, or to
    ``floor`` (the scale of the inputs) where the row is smaller: some rows are exactly zero
    (``dscale`` of a constant row, whose normalised row is 0)."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    out, ref = out.double().reshape(-1, ref.shape[-1]), ref.reshape(-1, ref.shape[-1])
    scale = ref.abs().amax(-1).clamp_min(floor)
    err = ((out - ref).abs().amax(-1) / scale).max().item()
    assert err <= TOL, f"{name}: max row error {err:.3e} relative to the row's max |ref| exceeds {TOL:.0e}"


@pytest.mark.parametrize("eps", EPS_PARAMS)
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_forward_and_backward_on_edge_rows(backend, eps):
    device, jvp, backward = BACKENDS[backend]
    x, x_dot, shift, scale, shift_dot, scale_dot, grad_m = edge_rows(device)
    ref = oracle(x, x_dot, shift, scale, shift_dot, scale_dot, grad_m, eps)
    out = (*jvp(x, x_dot, shift, scale, shift_dot, scale_dot, eps), *backward(grad_m, x, scale, eps))
    for name, o, r in zip(("m", "m_dot", "dx", "dshift", "dscale"), out, ref):
        assert_rows_close(f"{backend} {name} (eps {eps:g})", o, r, floor=1.0)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_public_op_passes_eps_to_forward_and_backward(backend):
    """Through ``mfkernels.layernorm_modulate_jvp`` with autograd: the ``eps`` given reaches
    the backend's forward and the saved context of its backward (no fallback on the way)."""
    eps = 1e-2
    device, _, _ = BACKENDS[backend]
    x, x_dot, shift, scale, shift_dot, scale_dot, grad_m = edge_rows(device)
    ref = oracle(x, x_dot, shift, scale, shift_dot, scale_dot, grad_m, eps)
    args = (x, x_dot, shift, scale, shift_dot, scale_dot, eps)
    assert dispatch.resolve("layernorm_modulate_jvp", backend, *args) == backend
    x, shift, scale = (t.clone().requires_grad_() for t in (x, shift, scale))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fallback warns: it must not happen here
        m, m_dot = mfkernels.layernorm_modulate_jvp(
            x, x_dot, shift, scale, shift_dot, scale_dot, eps=eps, backend=backend
        )
        m.backward(grad_m)
    out = (m.detach(), m_dot, x.grad, shift.grad, scale.grad)
    for name, o, r in zip(("m", "m_dot", "dx", "dshift", "dscale"), out, ref):
        assert_rows_close(f"{backend} {name}", o, r, floor=1.0)
