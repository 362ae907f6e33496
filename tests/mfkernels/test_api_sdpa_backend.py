"""The SDPA switch runs attention where it is told to and as often as it must: the backend
given to ``sdpa_forward_ad`` or ``patch_sdpa`` is the one that runs (also for the SDPA inside
``nn.MultiheadAttention``), a tangent on some of q, k, v takes one fused call, and tangents
out of sight keep a custom scale in the tangent as in the value; a mask with a tangent, or
one made inside the jvp from a parameter, runs math attention."""

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_close, needs_triton
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels
from mfkernels import dispatch, sdpa

# (batch, heads, seq, head_dim): the interpreter's smallest honest case.
SHAPE = (1, 2, 5, 16)


def qkv_and_tangents(dtype=torch.float32):
    return torch.randn(2, 3, *SHAPE, dtype=dtype).unbind(0)


def ran_on(seen: dict) -> set[str]:
    return seen.get("attention_jvp", set()) | seen.get("attention_backward", set())


@needs_triton
def test_sdpa_forward_ad_runs_the_backend_it_is_given():
    primals, tangents = qkv_and_tangents()
    with dispatch.record_backends() as seen, mfkernels.sdpa_forward_ad("triton"):
        torch.func.jvp(F.scaled_dot_product_attention, tuple(primals), tuple(tangents))
    assert ran_on(seen) == {"triton"}


class _SelfAttention(torch.nn.Module):
    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, h):
        return self.attn(h, h, h, need_weights=False)[0]


@needs_triton
def test_multihead_attention_runs_the_backend_it_is_given():
    model = _SelfAttention()
    h, h_dot = torch.randn(2, 1, 5, 32).unbind(0)
    with dispatch.record_backends() as seen, mfkernels.sdpa_forward_ad("triton"):
        torch.func.jvp(model, (h,), (h_dot,))
    assert ran_on(seen) == {"triton"}


@needs_triton
def test_a_patched_model_runs_the_backend_it_is_given():
    model = mfkernels.patch_sdpa(_SelfAttention(), backend="triton")
    h, h_dot = torch.randn(2, 1, 5, 32).unbind(0)
    with dispatch.record_backends() as seen:
        out, _ = torch.func.jvp(model, (h,), (h_dot,))
        out.sum().backward()
    assert ran_on(seen) == {"triton"}
    assert seen["attention_backward"] == {"triton"}


@pytest.mark.parametrize("with_tangent", ["q", "k", "v", "qv"])
def test_a_tangent_on_some_inputs_takes_one_call(with_tangent):
    """The inputs without a tangent are constants: their zero tangents go into the one fused
    call, not a second pass through the autograd.Function's jvp."""
    (q, k, v), (q_dot, k_dot, v_dot) = qkv_and_tangents(torch.float64)
    given = {"query": q, "key": k, "value": v}
    names = [{"q": "query", "k": "key", "v": "value"}[c] for c in with_tangent]
    tangents = tuple({"q": q_dot, "k": k_dot, "v": v_dot}[c] for c in with_tangent)

    def fn(*xs):
        return F.scaled_dot_product_attention(**{**given, **dict(zip(names, xs, strict=True))})

    reference = dispatch.lookup("attention_jvp", "reference")
    calls = []

    def counted(*args):
        calls.append(args)
        return reference.fn(*args)

    primals = tuple(given[n] for n in names)
    with dispatch.substitute("attention_jvp", "reference", counted), mfkernels.sdpa_forward_ad("reference"):
        o, o_dot = torch.func.jvp(fn, primals, tangents)
    assert len(calls) == 1
    with sdpa_kernel(SDPBackend.MATH):
        ref_o, ref_o_dot = torch.func.jvp(fn, primals, tangents)
    assert_close("O", o, ref_o, torch.float64)
    assert_close("O'", o_dot, ref_o_dot, torch.float64)


def test_tangents_out_of_sight_keep_a_custom_scale(monkeypatch):
    """The autograd.Function's jvp computes O' with the call's scale, not head_dim ** -0.5."""
    monkeypatch.setattr(sdpa, "_visible_tangent", lambda *tensors: False)
    primals, tangents = qkv_and_tangents(torch.float64)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, scale=1.7)

    with mfkernels.sdpa_forward_ad("reference"):
        o, o_dot = torch.func.jvp(fn, tuple(primals), tuple(tangents))
    with sdpa_kernel(SDPBackend.MATH):
        ref_o, ref_o_dot = torch.func.jvp(fn, tuple(primals), tuple(tangents))
    assert_close("O", o, ref_o, torch.float64)
    assert_close("O'", o_dot, ref_o_dot, torch.float64)


def test_a_tangent_of_the_mask_falls_back_to_math(monkeypatch):
    """The kernels take a constant mask: a jvp with respect to a float mask runs math
    attention, with the warning, and its tangent counts."""
    monkeypatch.setattr(sdpa, "_WARNED", set())
    (q, k, v), _ = qkv_and_tangents(torch.float64)
    mask, mask_dot = torch.randn(2, SHAPE[2], SHAPE[2], dtype=torch.float64).unbind(0)

    def fn(mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    with (
        mfkernels.sdpa_forward_ad("reference"),
        pytest.warns(UserWarning, match="attn_mask requires grad or has a tangent"),
    ):
        o, o_dot = torch.func.jvp(fn, (mask,), (mask_dot,))
    with sdpa_kernel(SDPBackend.MATH):
        ref_o, ref_o_dot = torch.func.jvp(fn, (mask,), (mask_dot,))
    assert_close("O", o, ref_o, torch.float64)
    assert_close("O'", o_dot, ref_o_dot, torch.float64)


def test_a_learned_bias_made_inside_the_jvp_gets_its_gradient(monkeypatch):
    """A relative-position bias computed from a parameter inside the function given to
    ``torch.func.jvp`` does not show ``requires_grad`` there (a functorch wrapper): it must
    still run math attention, which differentiates the mask, not the kernels, which give it
    none."""
    monkeypatch.setattr(sdpa, "_WARNED", set())
    primals, tangents = qkv_and_tangents(torch.float64)
    table = torch.randn(SHAPE[1], SHAPE[2], SHAPE[2], dtype=torch.float64, requires_grad=True)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=2.0 * table)

    def value_gradient(context):
        table.grad = None
        with context:
            o, o_dot = torch.func.jvp(fn, tuple(primals), tuple(tangents))
        o.square().sum().backward()
        return o_dot, table.grad

    with pytest.warns(UserWarning, match="attn_mask requires grad"):
        o_dot, grad = value_gradient(mfkernels.sdpa_forward_ad("reference"))
    ref_o_dot, ref_grad = value_gradient(sdpa_kernel(SDPBackend.MATH))
    assert grad is not None, "the learned bias got no gradient"
    assert_close("O'", o_dot, ref_o_dot, torch.float64)
    assert_close("d(table)", grad, ref_grad, torch.float64)
