"""``mfkernels.sdpa_forward_ad`` as a researcher's own model meets it: threads, gradients that
reach the fused tangent or differentiate the flash backward, and the reasons its fallbacks
name (docs/design.md section 2, "Forward-mode AD through any model's SDPA")."""

import threading

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from numerics import assert_close
from test_sdpa_forward_ad import BACKENDS, SHAPES, attention_inputs, check_fused_against_math
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels
from mfkernels import sdpa


def test_multihead_attention_in_two_threads_leaves_sdpa_unbound(monkeypatch):
    """``nn.MultiheadAttention`` under the switch in two threads whose calls overlap, the
    first to start finishing first: ``F.scaled_dot_product_attention`` is PyTorch's again
    afterwards (restoring per call left the second thread's copy of the first's rebinding
    in place for good), and both threads' attention ran on the switch."""
    first_in, second_in, first_done = threading.Event(), threading.Event(), threading.Event()
    seen = []
    flash_sdpa = sdpa.flash_sdpa

    def gated(*args, **kwargs):
        seen.append(threading.current_thread().name)
        if threading.current_thread().name == "first":
            first_in.set()
            second_in.wait(30)
        else:
            second_in.set()
            first_done.wait(30)
        return flash_sdpa(*args, **kwargs)

    monkeypatch.setattr(sdpa, "flash_sdpa", gated)
    attn = torch.nn.MultiheadAttention(16, 2, batch_first=True).double()
    h = torch.randn(2, 5, 16, dtype=torch.float64)
    outputs = {}

    def run(done=None):
        with mfkernels.sdpa_forward_ad("reference"), torch.no_grad():
            outputs[threading.current_thread().name] = attn(h, h, h, need_weights=False)[0]
        if done is not None:
            done.set()

    first = threading.Thread(target=run, args=(first_done,), name="first")
    second = threading.Thread(target=run, name="second")
    first.start()
    assert first_in.wait(30)
    second.start()
    first.join(60)
    second.join(60)
    try:
        assert F.scaled_dot_product_attention is sdpa._SDPA
    finally:
        F.scaled_dot_product_attention = sdpa._SDPA  # never leak a failure into later tests
    assert sorted(seen) == ["first", "second"]
    with torch.no_grad():
        expected = attn(h, h, h, need_weights=False)[0]
    assert torch.equal(outputs["first"], expected) and torch.equal(outputs["second"], expected)


def attention_then_linear(weight):
    """Attention and a projection after it: the model's output tangent has a graph (through
    ``weight``) whether or not the attention's tangent has one."""

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v) @ weight

    return fn


def func_jvp(fn, primals, tangents):
    return torch.func.jvp(fn, primals, tangents)


def forward_ad_jvp(fn, primals, tangents):
    with fwAD.dual_level():
        return fwAD.unpack_dual(fn(*(fwAD.make_dual(p, t) for p, t in zip(primals, tangents, strict=True))))


@pytest.mark.parametrize("jvp", [func_jvp, forward_ad_jvp, "out_of_sight"])
def test_a_gradient_through_the_fused_tangent_raises(jvp, monkeypatch):
    """A loss built from the tangent without detaching it (MeanFlow detaches its target):
    math attention differentiates the tangent, the fused one is a stop-gradient, so a
    gradient that reaches it raises, naming the fix, instead of silently losing that term.
    Detached, the gradients are math attention's. ``out_of_sight``: tangents the mode cannot
    read, the autograd.Function's jvp (its tangent lost that term in silence)."""
    if jvp == "out_of_sight":
        monkeypatch.setattr(sdpa, "_visible_tangent", lambda *tensors: False)
        jvp = func_jvp
    (q, k, v), tangents = attention_inputs(SHAPES["cross"], torch.float64)
    weight = torch.randn(16, 16, dtype=torch.float64, requires_grad=True)
    fn = attention_then_linear(weight)
    leaves = tuple(t.detach().clone().requires_grad_() for t in (q, k, v))
    with mfkernels.sdpa_forward_ad("reference"):
        out, out_dot = jvp(fn, leaves, tangents)
    with pytest.raises(RuntimeError, match="detach"):
        (out - out_dot).square().sum().backward()

    def grads(context):
        for t in (*leaves, weight):
            t.grad = None
        with context:
            out, out_dot = jvp(fn, leaves, tangents)
        (out - out_dot.detach()).square().sum().backward()
        return [t.grad for t in (*leaves, weight)]

    got = grads(mfkernels.sdpa_forward_ad("reference"))
    for name, grad, ref in zip(
        ("dQ", "dK", "dV", "dW"), got, grads(sdpa_kernel(SDPBackend.MATH)), strict=True
    ):
        assert_close(name, grad, ref, torch.float64)


def test_a_gradient_of_a_tangent_that_requires_grad_raises():
    """Tangents that require grad (a gradient wrt the direction wanted): the fused tangent
    does not depend on them differentiably, so a gradient reaching it raises."""
    primals, (q_dot, k_dot, v_dot) = attention_inputs(SHAPES["cross"], torch.float64)
    q_dot.requires_grad_()
    with mfkernels.sdpa_forward_ad("reference"):
        _, out_dot = torch.func.jvp(F.scaled_dot_product_attention, primals, (q_dot, k_dot, v_dot))
    with pytest.raises(RuntimeError, match="detach"):
        out_dot.sum().backward()


@pytest.mark.parametrize("jvp", [func_jvp, forward_ad_jvp])
def test_compiled_gradient_through_the_fused_tangent_raises(jvp):
    """The same under ``torch.compile``, where dynamo traces the eager check away (without the
    compiled path's own, the gradients came back as those of the detached loss): the loss on
    the tangent raises; detached, math attention's gradients, and the compiled backward is
    the flash backward alone (no check there)."""
    (q, k, v), tangents = attention_inputs(SHAPES["cross"], torch.float64)
    weight = torch.randn(16, 16, dtype=torch.float64, requires_grad=True)
    fn = attention_then_linear(weight)
    leaves = tuple(t.detach().clone().requires_grad_() for t in (q, k, v))
    backward_ops = []

    def loss(detach, *leaves):
        with mfkernels.sdpa_forward_ad("reference"):
            out, out_dot = jvp(fn, leaves, tangents)
        return (out - (out_dot.detach() if detach else out_dot)).square().sum()

    def backward_compiler(graph, _inputs):
        backward_ops.extend(str(n.target) for n in graph.graph.nodes if "mfkernels" in str(n.target))
        return make_boxed_func(graph.forward)

    torch._dynamo.reset()
    backend = aot_autograd(
        fw_compiler=lambda graph, _inputs: make_boxed_func(graph.forward), bw_compiler=backward_compiler
    )
    compiled = torch.compile(loss, backend=backend, fullgraph=True)
    with pytest.raises(RuntimeError, match="detach"):
        compiled(False, *leaves).backward()
    for t in (*leaves, weight):
        t.grad = None
    backward_ops.clear()
    compiled(True, *leaves).backward()
    assert backward_ops == ["mfkernels.attention_backward.default"]
    got = [t.grad for t in (*leaves, weight)]
    for t in (*leaves, weight):
        t.grad = None
    with sdpa_kernel(SDPBackend.MATH):
        loss(True, *leaves).backward()
    for name, grad, t in zip(("dQ", "dK", "dV", "dW"), got, (*leaves, weight), strict=True):
        assert_close(name, grad, t.grad, torch.float64)


def test_compiled_tangent_returned_checks_its_gradient_at_run_time():
    """A tangent returned from the compiled region, not detached: its backward is traced with
    a gradient it is handed whether or not one reaches it, so the check runs with the
    gradient. None reaching it (the zeros handed instead, or a zero one): math attention's
    gradients; a gradient through it, also outside the region: raises."""
    primals, tangents = attention_inputs(SHAPES["cross"], torch.float64)
    leaves = tuple(p.detach().clone().requires_grad_() for p in primals)

    def step(*leaves):
        with mfkernels.sdpa_forward_ad("reference"):
            o, o_dot = torch.func.jvp(F.scaled_dot_product_attention, leaves, tangents)
        return o.sin().sum(), o_dot

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    with sdpa_kernel(SDPBackend.MATH):
        ref = torch.autograd.grad(F.scaled_dot_product_attention(*leaves).sin().sum(), leaves)
    for zero_gradient in (False, True):
        value, o_dot = compiled(*leaves)
        got = torch.autograd.grad(value + 0 * o_dot.sum() if zero_gradient else value, leaves)
        for name, grad, r in zip(("dQ", "dK", "dV"), got, ref, strict=True):
            assert_close(name, grad, r, torch.float64)
    _, o_dot = compiled(*leaves)
    with pytest.raises(RuntimeError, match="detach"):
        o_dot.sum().backward()


def test_compiled_differentiable_gradient_raises():
    """``create_graph=True`` through a compiled jvp: torch's own refusal of a second
    derivative through any compiled graph (aot_autograd, torch 2.14), not a silent one."""
    (q, k, v), tangents = attention_inputs(SHAPES["cross"], torch.float64)
    leaves = tuple(t.detach().clone().requires_grad_() for t in (q, k, v))

    def value(*leaves):
        with mfkernels.sdpa_forward_ad("reference"):
            return torch.func.jvp(F.scaled_dot_product_attention, leaves, tangents)[0].sin().sum()

    torch._dynamo.reset()
    grads = torch.autograd.grad(torch.compile(value, backend="aot_eager")(*leaves), leaves, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        sum(g.square().sum() for g in grads).backward()


@pytest.mark.parametrize("backend,dtype", BACKENDS)
@pytest.mark.parametrize("jvp", [func_jvp, forward_ad_jvp, "out_of_sight"])
def test_a_differentiable_gradient_raises(backend, dtype, jvp, monkeypatch):
    """``create_graph=True`` through the fused attention (a gradient penalty, a Hessian-vector
    product): the flash backward is not differentiable, so it raises instead of giving a
    gradient that counts as constant (the Triton kernels' silently dropped that term).
    ``out_of_sight``: tangents the mode cannot read, the autograd.Function's backward."""
    if jvp == "out_of_sight":
        monkeypatch.setattr(sdpa, "_visible_tangent", lambda *tensors: False)
        jvp = func_jvp
    (q, k, v), tangents = attention_inputs(SHAPES["cross"], dtype)
    leaves = tuple(t.detach().clone().requires_grad_() for t in (q, k, v))
    with mfkernels.sdpa_forward_ad(backend):
        out, _ = jvp(F.scaled_dot_product_attention, leaves, tangents)
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(out.sin().sum(), leaves, create_graph=True)
    dq, dk, dv = torch.autograd.grad(out.sin().sum(), leaves)  # first order: fine
    with sdpa_kernel(SDPBackend.MATH):
        ref_out = F.scaled_dot_product_attention(*leaves)
    for name, grad, ref in zip(
        ("dQ", "dK", "dV"), (dq, dk, dv), torch.autograd.grad(ref_out.sin().sum(), leaves), strict=True
    ):
        assert_close(name, grad, ref, dtype)


def test_vmap_around_jvp_names_the_transform(monkeypatch):
    """``torch.func.vmap`` of a jvp over a batch of 4-D inputs: math attention (the custom ops
    have no vmap rule), its value and tangent, and the warning names the transform, not the
    3-D tensors the mode sees inside vmap."""
    monkeypatch.setattr(sdpa, "_WARNED", set())
    (q, k, v), (q_dot, k_dot, v_dot) = attention_inputs(SHAPES["cross"], torch.float64)

    def jvp(q, k, v):
        return torch.func.jvp(F.scaled_dot_product_attention, (q, k, v), (q_dot[0], k_dot[0], v_dot[0]))

    with mfkernels.sdpa_forward_ad("reference"), pytest.warns(UserWarning, match="transform") as caught:
        out, out_dot = torch.func.vmap(jvp)(q, k, v)
    assert not [w for w in caught if "not 4-D" in str(w.message)]
    with sdpa_kernel(SDPBackend.MATH):
        ref, ref_dot = torch.func.vmap(jvp)(q, k, v)
    assert_close("O", out, ref, torch.float64)
    assert_close("O'", out_dot, ref_dot, torch.float64)


@pytest.mark.parametrize("causal, bias", [(False, False), (True, False), (False, True)])
def test_opcheck_of_the_compiled_path_ops(causal, bias):
    """The two ops a compiled call traces: schema, fake tensors (their shapes are what the
    compiled graph allocates) and the autograd registration, with inputs and tangents that
    require grad as under torch.compile."""
    q, k, v = (torch.randn(1, 2, 17, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    q_dot, k_dot, v_dot = (torch.randn(1, 2, 17, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.randn(1, 2, 17, 17, dtype=torch.float64) if bias else None
    utils = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(
        torch.ops.mfkernels.sdpa_dual_attention.default,
        (q, k, v, q_dot, k_dot, v_dot, 8**-0.5, causal, "reference", mask),
        test_utils=utils,
    )
    torch.library.opcheck(
        torch.ops.mfkernels.sdpa_tangent_gradient_check.default, (torch.zeros(3, 4),), test_utils=utils
    )


@pytest.mark.parametrize("mask_dtype", [torch.float64, torch.float16])
def test_a_float_mask_sdpa_refuses_is_refused_naming_it(mask_dtype):
    """A float attn_mask neither float32 nor q's dtype: torch's SDPA refuses it, and so does
    the jvp (it would pass in training and fail in the model's plain forward)."""
    (q, k, v), tangents = attention_inputs(SHAPES["cross"], torch.bfloat16)
    mask = torch.zeros(9, 7, dtype=mask_dtype)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    with pytest.raises(RuntimeError, match="attn_mask"):
        fn(q, k, v)
    with mfkernels.sdpa_forward_ad(), pytest.raises(TypeError, match="^attn_mask must be bool, float32 or"):
        torch.func.jvp(fn, (q, k, v), tangents)


def test_a_float32_mask_on_bfloat16_inputs_takes_the_kernels():
    """The mixed mask SDPA takes (float32 with bfloat16 q) is added at float32 by the fused
    jvp, within bfloat16's tolerance of math SDPA in float64."""
    primals, tangents = attention_inputs(SHAPES["cross"], torch.bfloat16)
    mask = torch.randn(1, 2, 9, 7).masked_fill(torch.rand(1, 2, 9, 7) < 0.3, float("-inf"))
    mask[..., 0] = 0.0

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    check_fused_against_math(fn, primals, tangents, None, torch.bfloat16)


@pytest.mark.parametrize("backend,dtype", BACKENDS)
def test_expanded_bool_mask_stays_broadcast(backend, dtype, monkeypatch):
    """A key-padding mask ``expand``ed to ``(batch, heads, seq_q, seq_k)`` (Hugging Face models
    pass one) reaches the kernels as a bias broadcast as the mask is, not a dense float copy of
    the full shape (batch x heads x seq^2: more memory than attention itself), and gives math
    SDPA's value, tangent and gradients."""
    biases = []

    def spy(*args, **kwargs):
        biases.append(kwargs["bias"].stride())
        return mfkernels.attention_jvp(*args, **kwargs)

    monkeypatch.setattr(sdpa, "attention_jvp", spy)
    batch, heads, n_q, n_k, _ = shape = SHAPES["cross"]
    primals, tangents = attention_inputs(shape, dtype)
    padding = torch.ones(batch, 1, 1, n_k, dtype=torch.bool)
    padding[..., n_k - 3 :] = False
    mask = padding.expand(batch, heads, n_q, n_k)

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    check_fused_against_math(fn, primals, tangents, backend, dtype)
    # Strides of 0 over heads and queries: one row of keys per sample, read in place.
    assert biases and all(stride[1:3] == (0, 0) for stride in biases), biases
