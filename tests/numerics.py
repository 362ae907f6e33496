"""What the kernel tests share: SPEC.md section 3's tolerances and its error measure."""

import pytest
import torch

from mfkernels._triton import HAS_TRITON

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Against the float64 reference, relative to its max abs (SPEC section 3). float64 runs of
# the kernels (csrc CPU) are held to the reference ops' own bound.
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-2}
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package")


def rel_err(out, ref):
    """Max abs error relative to the reference's max abs. An output that is zero in exact
    arithmetic (dQ and dK when there is one key: softmax over one key is constant) has no
    scale of its own; it is measured against 1, the scale of the inputs."""
    scale = ref.double().abs().max().item()
    return (out.double() - ref.double()).abs().max().item() / (scale if scale > 1e-12 else 1.0)


def assert_close(name, out, ref, tol):
    """``tol``: a relative bound, or a dtype whose SPEC tolerance applies."""
    tol = TOL[tol] if isinstance(tol, torch.dtype) else tol
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    err = rel_err(out, ref)
    assert err <= tol, f"{name}: max abs error {err:.3e} relative to max |ref| exceeds {tol:.0e}"
