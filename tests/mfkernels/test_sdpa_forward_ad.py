"""Forward-mode AD through ``F.scaled_dot_product_attention`` under ``mfkernels.sdpa_forward_ad``
(docs/design.md section 2) against ``torch.func.jvp`` of math SDPA in float64: value, tangent
and the gradients of a loss on the value, for the attention shapes of a DiT (head dim 72), an
SD3-style joint attention (text and image tokens concatenated) and a ViT (a class token: a
ragged length), on the reference backend and the Triton kernels (the interpreter on the CPU).
The kernels' own accuracy is tests/mfkernels/test_attention_jvp.py's; here tolerances are
docs/design.md section 3's for the input dtype."""

import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from numerics import DEVICE, TOL, assert_close, needs_triton
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels
from mfkernels import sdpa

# (batch, heads, seq_q, seq_k, head_dim)
SHAPES = {
    "dit": (2, 2, 16, 16, 72),
    "sd3_joint": (1, 2, 5 + 16, 5 + 16, 24),
    "vit": (2, 3, 1 + 16, 1 + 16, 32),
    "cross": (1, 2, 9, 7, 16),
}
BACKENDS = [("reference", torch.float64), pytest.param("triton", torch.float32, marks=needs_triton)]


def attention_inputs(shape, dtype, device=DEVICE):
    """q, k, v and tangents; q, k, v as views of one packed tensor where the lengths match."""
    batch, heads, n_q, n_k, d = shape
    if n_q == n_k:
        q, k, v = torch.randn(batch, n_q, 3, heads, d, device=device).to(dtype).permute(2, 0, 3, 1, 4)
    else:
        q = torch.randn(batch, heads, n_q, d, device=device).to(dtype)
        k, v = torch.randn(2, batch, heads, n_k, d, device=device).to(dtype)
    tangents = tuple(torch.randn_like(t) for t in (q, k, v))
    return (q, k, v), tangents


def jvp_and_grads(fn, primals, tangents, grad_o):
    """``torch.func.jvp`` of ``fn`` and the gradients of ``<O, grad_o>`` wrt the primals."""
    leaves = [p.detach().clone().requires_grad_() for p in primals]
    o, o_dot = torch.func.jvp(fn, tuple(leaves), tuple(tangents))
    (o * grad_o).sum().backward()
    return o.detach(), o_dot, [leaf.grad for leaf in leaves]


def math_jvp_and_grads(fn, primals, tangents, grad_o):
    """The oracle: math SDPA in float64."""
    as64 = [t.double() for t in primals], [t.double() for t in tangents]
    with sdpa_kernel(SDPBackend.MATH):
        o, o_dot, grads = jvp_and_grads(fn, *as64, grad_o.double())
    return o, o_dot.detach(), grads


def assert_stop_gradient(o_dot):
    """Math SDPA's tangent is differentiable; ours is a stop-gradient: no graph, or one whose
    backward refuses (tests/mfkernels/test_sdpa_inputs.py)."""
    if o_dot.requires_grad:
        with pytest.raises(RuntimeError, match="stop-gradient"):
            o_dot.sum().backward()


def check_against_math(fn, primals, tangents, backend, tol):
    grad_o = torch.randn(primals[0].shape[:-1] + primals[2].shape[-1:], dtype=primals[0].dtype)
    with mfkernels.sdpa_forward_ad(backend):
        o, o_dot, grads = jvp_and_grads(fn, primals, tangents, grad_o)
    assert_stop_gradient(o_dot)
    ref_o, ref_o_dot, ref_grads = math_jvp_and_grads(fn, primals, tangents, grad_o)
    assert_close("O", o, ref_o, tol)
    assert_close("O'", o_dot, ref_o_dot, tol)
    for name, grad, ref in zip(("dQ", "dK", "dV"), grads, ref_grads, strict=True):
        assert_close(name, grad, ref, tol)


def check_fused_against_math(fn, primals, tangents, backend, tol):
    """:func:`check_against_math`, with no mfkernels warning (nothing fell back)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_against_math(fn, primals, tangents, backend, tol)
    assert not [w for w in caught if "mfkernels" in str(w.message)]


@pytest.mark.parametrize("backend,dtype", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_func_jvp_and_grads_match_math(shape, backend, dtype):
    primals, tangents = attention_inputs(shape, dtype)
    check_against_math(F.scaled_dot_product_attention, primals, tangents, backend, dtype)


@pytest.mark.parametrize("backend,dtype", BACKENDS)
def test_scale_keyword_and_positional(backend, dtype):
    primals, tangents = attention_inputs(SHAPES["vit"], dtype)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, None, 0.0, False, scale=0.3)

    check_against_math(fn, primals, tangents, backend, dtype)


@pytest.mark.parametrize("with_tangent", ["q", "k", "v", "qk"])
def test_tangents_on_a_subset(with_tangent):
    """Inputs without a tangent count as constants (zero tangents, not materialised)."""
    (q, k, v), (q_dot, k_dot, v_dot) = attention_inputs(SHAPES["sd3_joint"], torch.float64)
    given = {"query": q, "key": k, "value": v}
    names = [{"q": "query", "k": "key", "v": "value"}[c] for c in with_tangent]

    def fn(*xs):
        return F.scaled_dot_product_attention(**{**given, **dict(zip(names, xs, strict=True))})

    primals = tuple(given[n] for n in names)
    tangents = tuple({"query": q_dot, "key": k_dot, "value": v_dot}[n] for n in names)
    with mfkernels.sdpa_forward_ad("reference"):
        o, o_dot = torch.func.jvp(fn, primals, tangents)
    with sdpa_kernel(SDPBackend.MATH):
        ref_o, ref_o_dot = torch.func.jvp(fn, primals, tangents)
    assert_close("O", o, ref_o, torch.float64)
    assert_close("O'", o_dot, ref_o_dot, torch.float64)


def count_attention_calls(monkeypatch) -> list:
    """The tangents and the ``causal`` flag of each attention_jvp call sdpa makes."""
    calls = []

    def counted(*args, **kwargs):
        calls.append((*args[3:6], kwargs.get("causal", False)))
        return mfkernels.attention_jvp(*args, **kwargs)

    monkeypatch.setattr(sdpa, "attention_jvp", counted)
    return calls


def test_forward_ad_dual_tensors_take_one_pass(monkeypatch):
    """Eager ``forward_ad``: one attention_jvp call gives O and O'; the backward through the
    primal matches math SDPA; the tangent has no graph."""
    calls = count_attention_calls(monkeypatch)
    (q, k, v), (q_dot, _, v_dot) = attention_inputs(SHAPES["vit"], torch.float64)
    grad_o = torch.randn_like(q)

    def run(context):
        leaf = q.detach().clone().requires_grad_()
        with context, fwAD.dual_level():
            o = F.scaled_dot_product_attention(fwAD.make_dual(leaf, q_dot), k, fwAD.make_dual(v, v_dot))
            value, tangent = fwAD.unpack_dual(o)
            (value * grad_o).sum().backward()
        return value.detach(), tangent, leaf.grad

    o, o_dot, dq = run(mfkernels.sdpa_forward_ad("reference"))
    assert len(calls) == 1
    assert_stop_gradient(o_dot)
    ref = run(sdpa_kernel(SDPBackend.MATH))
    for name, out, expected in zip(("O", "O'", "dQ"), (o, o_dot, dq), ref, strict=True):
        assert_close(name, out, expected.detach(), torch.float64)


def test_func_jvp_takes_one_pass(monkeypatch):
    """``torch.func.jvp``: its inputs' tangents are read at the mode, one kernel call gives
    O and O'. Without forward AD the call is PyTorch's own: no kernel call, no warning, even
    for what the kernels do not take."""
    calls = count_attention_calls(monkeypatch)
    monkeypatch.setattr(sdpa, "_WARNED", set())
    primals, tangents = attention_inputs(SHAPES["vit"], torch.float64)
    with mfkernels.sdpa_forward_ad("reference"), warnings.catch_warnings():
        warnings.simplefilter("error")
        o = F.scaled_dot_product_attention(*primals)
        F.scaled_dot_product_attention(*primals, is_causal=True)
        assert not calls
        o_fused, _ = torch.func.jvp(F.scaled_dot_product_attention, primals, tangents)
    assert len(calls) == 1
    assert_close("O", o_fused, o, torch.float64)


def test_tangents_out_of_sight_take_the_autograd_function(monkeypatch):
    """Where a forward-AD level is active but no tangent can be read at the mode, the
    autograd.Function computes O in its forward and O' in its jvp (two kernel calls), and
    its backward is the flash backward: still the math result."""
    calls = count_attention_calls(monkeypatch)
    monkeypatch.setattr(sdpa, "_visible_tangent", lambda *tensors: False)
    primals, tangents = attention_inputs(SHAPES["sd3_joint"], torch.float64)
    check_against_math(F.scaled_dot_product_attention, primals, tangents, "reference", torch.float64)
    assert len(calls) == 2


CAUSAL_SHAPES = {
    "square": (2, 2, 17, 17, 72),
    "fewer_queries": (1, 2, 9, 20, 16),
    "fewer_keys": (1, 2, 20, 9, 16),
}


@pytest.mark.parametrize("backend,dtype", BACKENDS)
@pytest.mark.parametrize("shape", CAUSAL_SHAPES.values(), ids=CAUSAL_SHAPES.keys())
def test_is_causal_takes_the_kernels(shape, backend, dtype, monkeypatch):
    """``is_causal=True``: one fused call with the causal mask, aligned at the top left as
    SDPA's where the lengths differ; math SDPA's value, tangent and gradients, no warning."""
    calls = count_attention_calls(monkeypatch)
    primals, tangents = attention_inputs(shape, dtype)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    check_fused_against_math(fn, primals, tangents, backend, dtype)
    assert [call[-1] for call in calls] == [True]


def test_is_causal_with_tangents_out_of_sight(monkeypatch):
    """The autograd.Function path keeps the causal mask in its forward, jvp and backward."""
    calls = count_attention_calls(monkeypatch)
    monkeypatch.setattr(sdpa, "_visible_tangent", lambda *tensors: False)
    primals, tangents = attention_inputs(CAUSAL_SHAPES["fewer_keys"], torch.float64)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, None, 0.0, True)

    check_against_math(fn, primals, tangents, "reference", torch.float64)
    assert [call[-1] for call in calls] == [True, True]


NESTED = {
    "grad_of_jvp": lambda f, p, t: torch.func.grad(lambda q: torch.func.jvp(f, (q, *p[1:]), t)[1].sum())(
        p[0]
    ),
    "jvp_of_jvp": lambda f, p, t: torch.func.jvp(
        lambda q: torch.func.jvp(f, (q, *p[1:]), t)[1], p[:1], t[:1]
    )[1],
}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("case", NESTED.keys())
def test_other_transforms_fall_back(case, compiled, monkeypatch):
    """torch.func transforms other than one jvp level (the custom ops have no grad or vmap
    rule; a tangent of the fused tangent would be silently zero) run math attention, traced
    by torch.compile too (where the jvp of a jvp once took the fused path: zero)."""
    monkeypatch.setattr(sdpa, "_WARNED", set())
    primals, tangents = attention_inputs(SHAPES["vit"], torch.float64)

    def transformed(*primals):
        with mfkernels.sdpa_forward_ad("reference"):
            return NESTED[case](F.scaled_dot_product_attention, primals, tangents)

    torch._dynamo.reset()
    with pytest.warns(UserWarning, match="runs math attention"):
        got = (torch.compile(transformed, backend="aot_eager") if compiled else transformed)(*primals)
    with sdpa_kernel(SDPBackend.MATH):
        ref = NESTED[case](F.scaled_dot_product_attention, primals, tangents)
    assert_close(case, got, ref, torch.float64)


def grouped_inputs(heads, kv_heads, dtype):
    """q with ``heads`` heads, k and v with ``kv_heads`` (views of one packed kv tensor)."""
    q = torch.randn(2, heads, 17, 24, device=DEVICE).to(dtype)
    k, v = torch.randn(2, 17, 2, kv_heads, 24, device=DEVICE).to(dtype).permute(2, 0, 3, 1, 4)
    return (q, k, v), tuple(torch.randn_like(t) for t in (q, k, v))


@pytest.mark.parametrize("backend,dtype", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_enable_gqa_takes_the_kernels(backend, dtype, causal, monkeypatch):
    """``enable_gqa=True`` with fewer key/value heads (Lumina- and Llama-style grouped-query
    attention): one fused call; math SDPA's value, tangent and gradients (dK, dV summed over
    each key/value head's query heads), no warning."""
    calls = count_attention_calls(monkeypatch)
    primals, tangents = grouped_inputs(6, 2, dtype)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)

    check_fused_against_math(fn, primals, tangents, backend, dtype)
    assert [call[-1] for call in calls] == [causal]


def test_enable_gqa_with_tangents_out_of_sight(monkeypatch):
    """The autograd.Function path: its jvp and backward take the grouped heads too."""
    calls = count_attention_calls(monkeypatch)
    monkeypatch.setattr(sdpa, "_visible_tangent", lambda *tensors: False)
    primals, tangents = grouped_inputs(4, 1, torch.float64)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    check_against_math(fn, primals, tangents, "reference", torch.float64)
    assert len(calls) == 2


def masks(batch, heads, n_q, n_k, dtype):
    """SDPA ``attn_mask``s as models pass them: a bool key-padding mask ``(batch, 1, 1, n_k)``
    (text padding), a bool ``(n_q, n_k)`` mask, and a float bias per head with -inf entries
    and one query row that sees no key (math SDPA gives it zeros)."""
    padding = torch.ones(batch, 1, 1, n_k, dtype=torch.bool, device=DEVICE)
    padding[0, ..., n_k - 3 :] = False
    pattern = torch.rand(n_q, n_k, device=DEVICE) > 0.3
    pattern[:, 0] = True
    bias = torch.randn(batch, heads, n_q, n_k, device=DEVICE).to(dtype)
    bias = bias.masked_fill(torch.rand(bias.shape, device=DEVICE) < 0.3, float("-inf"))
    bias[0, 0, 2] = float("-inf")
    return {"key_padding": padding, "bool_2d": pattern, "float_bias": bias}


@pytest.mark.parametrize("backend,dtype", BACKENDS)
@pytest.mark.parametrize("kind", ["key_padding", "bool_2d", "float_bias"])
def test_attn_mask_takes_the_kernels(backend, dtype, kind, monkeypatch):
    """``attn_mask`` (bool: True takes part; float: added to the scores) on the kernels as an
    additive bias: one fused call, math SDPA's value, tangent and gradients, no warning."""
    calls = count_attention_calls(monkeypatch)
    primals, tangents = attention_inputs(SHAPES["cross"], dtype)
    mask = masks(1, 2, 9, 7, dtype)[kind]

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    check_fused_against_math(fn, primals, tangents, backend, dtype)
    assert len(calls) == 1


def test_attn_mask_with_tangents_out_of_sight(monkeypatch):
    """The autograd.Function path keeps the mask in its forward, jvp and backward."""
    calls = count_attention_calls(monkeypatch)
    monkeypatch.setattr(sdpa, "_visible_tangent", lambda *tensors: False)
    primals, tangents = attention_inputs(SHAPES["cross"], torch.float64)
    mask = masks(1, 2, 9, 7, torch.float64)["float_bias"]

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    check_against_math(fn, primals, tangents, "reference", torch.float64)
    assert len(calls) == 2


FALLBACKS = {
    "mask_with_grad": (dict(attn_mask=torch.zeros(17, 17, dtype=torch.float64).requires_grad_()), "mask"),
    "dropout": (dict(dropout_p=0.5), "dropout_p"),
    "heads_broadcast": ({}, "heads broadcast"),
    "no_kv_heads": (dict(enable_gqa=True), "an empty dimension"),
}


@pytest.mark.parametrize("case", FALLBACKS.keys())
def test_fallbacks_warn_once_and_match_math(case, monkeypatch):
    monkeypatch.setattr(sdpa, "_WARNED", set())
    kwargs, reason = FALLBACKS[case]
    (q, k, v), (q_dot, k_dot, v_dot) = attention_inputs(SHAPES["vit"], torch.float64)
    if case == "heads_broadcast":  # one key/value head for three query heads, no enable_gqa
        k, v, k_dot, v_dot = (t[:, :1] for t in (k, v, k_dot, v_dot))
    if case == "no_kv_heads":  # the grouped-heads check must not divide by their count
        k, v, k_dot, v_dot = (t[:, :0] for t in (k, v, k_dot, v_dot))

    def fn(q, k, v):
        if case == "dropout":  # the same dropout mask in both runs
            torch.manual_seed(1)
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    primals, tangents = (q, k, v), (q_dot, k_dot, v_dot)
    with mfkernels.sdpa_forward_ad("reference"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        o, o_dot = torch.func.jvp(fn, primals, tangents)
        torch.func.jvp(fn, primals, tangents)
    ours = [w for w in caught if "sdpa_forward_ad" in str(w.message)]
    assert len(ours) == 1 and reason in str(ours[0].message)
    with sdpa_kernel(SDPBackend.MATH):
        ref_o, ref_o_dot = torch.func.jvp(fn, primals, tangents)
    assert_close("O", o, ref_o, torch.float64)
    assert_close("O'", o_dot, ref_o_dot, torch.float64)


def test_backend_is_checked_at_the_call():
    """A misspelt backend fails where it is given, not at the first jvp inside."""
    with pytest.raises(ValueError, match="backend must be one of .* got 'bogus'"):
        mfkernels.sdpa_forward_ad("bogus")
    model = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="backend must be one of .* got 'bogus'"):
        mfkernels.patch_sdpa(model, backend="bogus")
    assert "forward" not in model.__dict__


class TinyViTBlock(torch.nn.Module):
    """A pre-norm ViT block as timm writes it: fused qkv, SDPA, projection, MLP."""

    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim)
        )

    def forward(self, x):
        batch, n, dim = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(batch, n, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, n, dim)
        x = x + self.proj(attn)
        return x + self.mlp(self.norm2(x))


def loss_and_grads(model, x, x_dot):
    """A MeanFlow-shaped loss: the value against the stop-gradient tangent."""
    model.zero_grad()
    out, out_dot = torch.func.jvp(model, (x,), (x_dot,))
    loss = (out - out_dot.detach()).square().mean()
    loss.backward()
    return loss.detach(), out_dot, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("backend,dtype", BACKENDS)
def test_patch_sdpa_vit_block(backend, dtype):
    model = TinyViTBlock().to(dtype)
    x, x_dot = torch.randn(2, 2, 17, 32, dtype=dtype).unbind(0)
    with sdpa_kernel(SDPBackend.MATH):
        ref = loss_and_grads(model.double(), x.double(), x_dot.double())
    ref_weight = model.qkv.weight.detach().clone()
    with torch.no_grad():
        model.qkv.weight.zero_()  # the original's weights: wrong if the copy ran the original
    keys = list(model.state_dict())
    model = mfkernels.patch_sdpa(mfkernels.patch_sdpa(model.to(dtype), backend), backend)
    assert list(model.state_dict()) == keys
    model = copy.deepcopy(model)  # an EMA copy: patched, and running its own weights
    model.qkv.weight.data.copy_(ref_weight)
    loss, out_dot, grads = loss_and_grads(model, x, x_dot)
    assert_close("loss", loss, ref[0], dtype)
    assert_close("out'", out_dot, ref[1], dtype)
    for name, grad in grads.items():
        assert_close(name, grad, ref[2][name], dtype)


def test_compile_forward_backward_fullgraph():
    """A plain forward and backward under patch_sdpa (PyTorch's SDPA): one graph, no break."""
    torch._dynamo.reset()
    model = mfkernels.patch_sdpa(TinyViTBlock().double(), "reference")
    x = torch.randn(2, 17, 32, dtype=torch.float64)

    def step(x):
        return model(x).square().sum()

    explained = torch._dynamo.explain(step)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    loss = compiled(x)
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    step(x).backward()
    assert_close("loss", loss.detach(), step(x).detach(), torch.float64)
    for name, p in model.named_parameters():
        assert_close(name, got[name], p.grad, torch.float64)


def test_compile_func_jvp_fullgraph():
    """torch.func.jvp through SDPA, and the backward of the value, inside one compiled graph:
    the tangents are read at the mode while dynamo traces, the same one-pass call."""
    primals, tangents = attention_inputs(SHAPES["vit"], torch.float64)
    grad_o = torch.randn_like(primals[0])

    def step(*primals):
        with mfkernels.sdpa_forward_ad("reference"):
            o, o_dot = torch.func.jvp(F.scaled_dot_product_attention, primals, tangents)
        return (o * grad_o).sum(), o_dot

    torch._dynamo.reset()
    explained = torch._dynamo.explain(step)(*primals)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    torch._dynamo.reset()
    leaves = [p.detach().clone().requires_grad_() for p in primals]
    loss, o_dot = torch.compile(step, backend="aot_eager", fullgraph=True)(*leaves)
    loss.backward()
    with sdpa_kernel(SDPBackend.MATH):
        ref_o, ref_o_dot, ref_grads = jvp_and_grads(F.scaled_dot_product_attention, primals, tangents, grad_o)
    assert_close("O'", o_dot, ref_o_dot, torch.float64)
    for name, leaf, ref in zip(("dQ", "dK", "dV"), leaves, ref_grads, strict=True):
        assert_close(name, leaf.grad, ref, torch.float64)


def test_compile_refuses_tangents_out_of_sight(monkeypatch):
    """Traced under a forward-AD level with no tangent to read: fullgraph fails loudly (never
    a wrong tangent); without fullgraph dynamo runs that frame eagerly, with the right one."""
    monkeypatch.setattr(sdpa, "_visible_tangent", lambda *tensors: False)
    primals, tangents = attention_inputs(SHAPES["vit"], torch.float64)

    def tangent(*primals):
        with mfkernels.sdpa_forward_ad("reference"):
            return torch.func.jvp(F.scaled_dot_product_attention, primals, tangents)[1]

    torch._dynamo.reset()
    with pytest.raises(Exception, match="tangents cannot be read"):
        torch.compile(tangent, backend="aot_eager", fullgraph=True)(*primals)
    torch._dynamo.reset()
    got = torch.compile(tangent, backend="aot_eager")(*primals)
    assert_close("O'", got, tangent(*primals), torch.float64)


# ------------------------------------------------------------------------------ GPU, bf16


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize(
    "shape", [(2, 4, 256, 256, 72), (2, 4, 77 + 256, 77 + 256, 64), (2, 6, 197, 197, 64)]
)
def test_gpu_bf16_matches_math(shape):
    primals, tangents = attention_inputs(shape, torch.bfloat16, device="cuda")
    grad_o = torch.randn(primals[0].shape, device="cuda", dtype=torch.bfloat16)
    with mfkernels.sdpa_forward_ad("triton"):
        o, o_dot, grads = jvp_and_grads(F.scaled_dot_product_attention, primals, tangents, grad_o)
    ref_o, ref_o_dot, ref_grads = math_jvp_and_grads(
        F.scaled_dot_product_attention, primals, tangents, grad_o
    )
    for name, out, ref in zip(
        ("O", "O'", "dQ", "dK", "dV"), (o, o_dot, *grads), (ref_o, ref_o_dot, *ref_grads)
    ):
        assert out.dtype == torch.bfloat16
        assert_close(name, out, ref, TOL[torch.bfloat16])


def test_multihead_attention_module(monkeypatch):
    """nn.MultiheadAttention calls SDPA from inside F.multi_head_attention_forward, a call the
    mode handles with itself switched off: that SDPA is caught too, and matches math."""
    calls = count_attention_calls(monkeypatch)
    attn = torch.nn.MultiheadAttention(32, 2, batch_first=True).double()
    h, h_dot = torch.randn(2, 2, 9, 32, dtype=torch.float64).unbind(0)

    def fn(h):
        return attn(h, h, h, need_weights=False)[0]

    with mfkernels.sdpa_forward_ad("reference"):
        out, out_dot = torch.func.jvp(fn, (h,), (h_dot,))
    assert len(calls) == 1 and F.scaled_dot_product_attention is sdpa._SDPA
    with sdpa_kernel(SDPBackend.MATH):
        ref, ref_dot = torch.func.jvp(fn, (h,), (h_dot,))
    assert_close("out", out, ref, torch.float64)
    assert_close("out'", out_dot, ref_dot, torch.float64)


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # interpreter, unstored rows
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_attn_mask_of_finfo_min_attends_uniformly(monkeypatch):
    """Hugging Face's float mask, finfo(float32).min on masked keys, with query rows masked
    whole by it: math SDPA attends to all their keys alike, and so do the kernels (value and
    tangent against math SDPA in float64), not O = 0 as for a row that sees no key. Their
    gradients are those of the saved-LSE backward, the reference backend's."""
    calls = count_attention_calls(monkeypatch)
    primals, tangents = attention_inputs(SHAPES["cross"], torch.float32)
    mask = torch.zeros(1, 2, 9, 7, device=DEVICE)
    mask[..., 1::3, :] = torch.finfo(torch.float32).min
    mask[0, 1, 2, 3:] = torch.finfo(torch.float32).min

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    grad_o = torch.randn(1, 2, 9, 16)
    with mfkernels.sdpa_forward_ad("triton"):
        o, o_dot, grads = jvp_and_grads(fn, primals, tangents, grad_o)
    ref_o, ref_o_dot, _ = math_jvp_and_grads(fn, primals, tangents, grad_o)
    assert_close("O", o, ref_o, torch.float32)
    assert_close("O'", o_dot, ref_o_dot, torch.float32)
    v = primals[2]
    assert_close("O of rows masked whole", o[..., 1::3, :], v.mean(2, keepdim=True).expand(1, 2, 3, 16), 1e-6)
    with mfkernels.sdpa_forward_ad("reference"):
        as64 = [p.double() for p in primals], [t.double() for t in tangents]
        _, _, ref_grads = jvp_and_grads(fn, *as64, grad_o.double())
    for name, grad, ref in zip(("dQ", "dK", "dV"), grads, ref_grads, strict=True):
        assert_close(name, grad, ref, torch.float32)
    assert len(calls) == 2


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_patched_model_pickles(how, monkeypatch):
    """A whole patched model saved and loaded (torch.save, pickle) comes back patched, running
    its own weights: one fused call under jvp, the original's value and tangent."""
    calls = count_attention_calls(monkeypatch)
    model = mfkernels.patch_sdpa(TinyViTBlock().double(), "reference")
    if how == "pickle":
        loaded = pickle.loads(pickle.dumps(model))
    else:
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
    x, x_dot = torch.randn(2, 2, 17, 32, dtype=torch.float64).unbind(0)
    out, out_dot = torch.func.jvp(model, (x,), (x_dot,))
    with torch.no_grad():
        model.qkv.weight.zero_()  # the loaded model must not run the original's weights
    loaded_out, loaded_out_dot = torch.func.jvp(loaded, (x,), (x_dot,))
    assert len(calls) == 2
    assert torch.equal(loaded_out, out) and torch.equal(loaded_out_dot, out_dot)
