"""The input checks (``mfkernels/_checks.py``, docs/design.md section 3) refuse what a kernel
would otherwise read wrongly or what would lose a gradient without a word: each case here is
one a looser check lets through."""

import pytest
import torch

import mfkernels
from mfkernels import _checks


def rand(*shape, **kw):
    return torch.randn(*shape, dtype=torch.float64, **kw)


def test_a_bias_may_not_grow_the_scores():
    """A bias broadcasts to (batch, heads, seq_q, seq_k) without a dimension of its own: an
    extra leading one would make the scores, and O, five-dimensional."""
    q = rand(1, 2, 5, 8)
    with pytest.raises(ValueError, match="bias must broadcast"):
        mfkernels.attention_jvp(*[q] * 6, bias=rand(3, 1, 2, 5, 5))
    assert _checks.broadcasts_to((2, 1, 5), (1, 2, 2, 5))
    assert not _checks.broadcasts_to((3, 1, 2, 5, 5), (1, 2, 5, 5))
    assert not _checks.broadcasts_to((4, 5), (1, 2, 5, 5))


def test_a_bias_computed_from_parameters_is_refused():
    """Not only a leaf: a bias made from a parameter requires grad too, and the ops give it
    none, so the parameter would silently stop learning."""
    q = rand(1, 2, 5, 8)
    parameter = rand(5, 5, requires_grad=True)
    with pytest.raises(ValueError, match="bias requires grad"):
        mfkernels.attention_jvp(*[q] * 6, bias=parameter * 2.0)


def test_a_bias_computed_from_parameters_inside_a_jvp_is_refused():
    """Inside ``torch.func.jvp`` a bias made from a parameter is a functorch wrapper whose own
    ``requires_grad`` is False: read at face value it passed, and the parameter got no
    gradient and no error."""
    q = rand(1, 2, 5, 8)
    parameter = rand(5, 5, requires_grad=True)

    def scaled(x):
        return mfkernels.attention_jvp(*[q] * 6, bias=parameter * 2.0)[0].sum() * x

    with pytest.raises(ValueError, match="bias requires grad"):
        torch.func.jvp(scaled, (torch.ones(()),), (torch.ones(()),))


def test_a_tangent_of_another_16_bit_dtype_is_refused():
    """float16 and bfloat16 have one size and different bits."""
    x = torch.randn(2, 3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="x_dot has dtype torch.float16"):
        mfkernels.silu_jvp(x, x.to(torch.float16))


def test_tensors_on_two_devices_are_refused():
    """The LayerNorm's x on one device and its modulation on another (each pair agreeing)."""
    x = rand(2, 3, 8)
    shift, scale = rand(2, 8, device="meta"), rand(2, 8, device="meta")
    with pytest.raises(ValueError, match="one device"):
        mfkernels.layernorm_modulate_jvp(x, x, shift, scale, shift, scale)
    with pytest.raises(ValueError, match="one device"):
        _checks.check_same_device(x=x, weight=shift)
    _checks.check_same_device(x=x, weight=x, bias=None)


def call_norm(op, eps, backend=None):
    """``op`` (a normalisation with an ``eps``) on small fp32 inputs."""
    x = torch.randn(2, 3, 8)
    if op == "rms_norm_jvp":
        return mfkernels.rms_norm_jvp(x, x, torch.randn(8), eps=eps, backend=backend)
    shift, scale = torch.randn(2, 8), torch.randn(2, 8)
    return mfkernels.layernorm_modulate_jvp(x, x, shift, scale, shift, scale, eps=eps, backend=backend)


NORMS = ["layernorm_modulate_jvp", "rms_norm_jvp"]


@pytest.mark.parametrize("op", NORMS)
@pytest.mark.parametrize("backend", sorted(mfkernels.available_backends("cpu")))
@pytest.mark.parametrize("eps", [-1.0, float("nan")])
def test_a_negative_or_nan_eps_is_refused_on_every_backend(op, backend, eps):
    """The csrc kernels refuse it; the reference and Triton returned NaN rows for it."""
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        call_norm(op, eps, backend)


@pytest.mark.parametrize("op", NORMS)
def test_an_eps_that_is_not_a_number_is_refused(op):
    with pytest.raises(TypeError, match="eps must be a number, got str"):
        call_norm(op, "1e-6")


@pytest.mark.parametrize(
    "x, vector, eps, error, match",
    [
        (rand(2, 4, 4), rand(4), 1e-6, ValueError, r"shift must have shape \(batch, dim\) .* got \(4,\)"),
        (rand(4, 4), rand(2, 4), 1e-6, ValueError, r"x must be \(batch, tokens, dim\), got shape \(4, 4\)"),
        (rand(2, 4, 4), rand(2, 4), -1.0, ValueError, "eps must be a number >= 0"),
        (rand(2, 4, 4), rand(2, 4).numpy(), 1e-6, TypeError, "shift must be a torch.Tensor, got ndarray"),
    ],
    ids=["feature-vectors", "2-d-x", "negative-eps", "not-a-tensor"],
)
def test_the_primal_layernorm_modulate_refuses_what_its_jvp_refuses(x, vector, eps, error, match):
    """(dim,) vectors broadcast over tokens (where tokens == dim, without a word) and a 2-D x
    grew a batch dimension: its jvp refuses both."""
    with pytest.raises(error, match=match):
        mfkernels.layernorm_modulate(x, vector, vector, eps=eps)
    x_dot = torch.zeros_like(x)
    vector_dot = torch.zeros_like(vector) if isinstance(vector, torch.Tensor) else vector
    with pytest.raises(error, match=match):
        mfkernels.layernorm_modulate_jvp(x, x_dot, vector, vector, vector_dot, vector_dot, eps=eps)


def test_a_scale_of_another_shape_than_batch_by_dim_is_refused():
    """A per-token scale beside a right shift: refused naming scale, not broadcast."""
    x, shift = torch.randn(2, 5, 8), torch.randn(2, 8)
    scale = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"scale must have shape \(batch, dim\)"):
        mfkernels.layernorm_modulate_jvp(x, x, shift, scale, shift, scale, backend="reference")
