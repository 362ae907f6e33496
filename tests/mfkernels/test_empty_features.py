"""The ops with a per-feature vector (GELU's bias, RMSNorm's weight) on empty inputs, as torch's
own layers take them: rows of no features, or no rows. Value and tangent are empty, the
gradient of x is empty and that of the vector is a sum over no rows: zeros of ``(dim,)``, an
empty one for ``dim`` 0 (where ``reshape(-1, dim)`` raised in the backward)."""

import warnings

import pytest
import torch

import mfkernels

SHAPES = [(3, 0), (0,), (2, 3, 0), (2, 0, 4), (0, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", ["gelu_tanh_jvp", "rms_norm_jvp"])
@pytest.mark.parametrize("backend", sorted(mfkernels.available_backends("cpu")))
def test_gradients_of_empty_rows_or_features(backend, op, shape):
    x = torch.randn(shape, requires_grad=True)
    vector = torch.randn(shape[-1], requires_grad=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "mfkernels")  # the cpu backend has no RMSNorm
        y, y_dot = getattr(mfkernels, op)(x, torch.randn(shape), vector, backend=backend)
        y.sum().backward()
    assert y.shape == y_dot.shape == x.grad.shape == shape
    assert vector.grad.shape == (shape[-1],) and not vector.grad.any()
