"""What the kernel tests share: docs/design.md section 3's tolerances and its error measure."""

import pytest
import torch

from mfkernels.backends.triton.triton_compat import HAS_TRITON

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Against the float64 reference, relative to its max abs (docs/design.md section 3). float64 runs of
# the kernels (csrc CPU) are held to the reference ops' own bound.
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-2}
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package")


def rel_err(out, ref, floor=1.0):
    """Max abs error over ``max(max |ref|, floor)``.

    ``floor`` is the magnitude the inputs give the result: 1 for the unit-scale random inputs
    of these tests; pass :func:`input_scale` of other inputs. Without a floor, an output that
    is zero in exact arithmetic (dQ and dK when there is one key: softmax over one key is
    constant) is measured against its own rounding noise, which differs between CPUs (ATen's
    and MKL's kernels per instruction set): 1e-16 over 1e-300 failed on an AVX-512 Xeon.
    """
    scale = max(ref.double().abs().max().item(), floor)
    return (out.double() - ref.double()).abs().max().item() / scale


def f64(*tensors):
    """Detached float64 copies (None stays None): the reference's inputs."""
    return [None if t is None else t.detach().double() for t in tensors]


def input_scale(*tensors):
    """The largest magnitude among a test's inputs: the floor of :func:`rel_err` for them."""
    return max(t.detach().double().abs().max().item() for t in tensors)


def assert_close(name, out, ref, tol, floor=1.0):
    """``tol``: a relative bound, or a dtype whose tolerance (``TOL``) applies; ``floor``: see
    :func:`rel_err`."""
    tol = TOL[tol] if isinstance(tol, torch.dtype) else tol
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    err = rel_err(out, ref, floor)
    assert err <= tol, (
        f"{name}: max abs error {err:.3e} relative to max(max |ref|, {floor:.1e}) exceeds {tol:.0e}"
    )
