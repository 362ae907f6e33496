"""Forward-mode AD through ``F.scaled_dot_product_attention`` on the fused attention JVP
(docs/design.md section 2, "Forward-mode AD through any model's SDPA").

PyTorch's fused SDPA kernels have no forward-mode AD, so ``torch.func.jvp`` through a
transformer otherwise needs math attention (``N x N`` scores in memory). Under
:func:`sdpa_forward_ad` (or on a model given to :func:`patch_sdpa`) every call of
``F.scaled_dot_product_attention`` is intercepted by a ``TorchFunctionMode`` (also the one
inside ``nn.MultiheadAttention``) and runs:

- where its inputs carry a tangent at the innermost forward-AD level (``torch.func.jvp``, whose
  inputs are that level's dual tensors, and ``torch.autograd.forward_ad``): read with
  ``forward_ad.unpack_dual``, then :func:`attention_jvp` once gives ``O``, ``O'`` and ``LSE``
  (one pass, the dual DiT's cost); ``O`` carries ``O'`` as its tangent, and its backward is
  attention_jvp's own, the flash backward;
- without a forward-AD level (a plain forward, reverse mode): PyTorch's own SDPA, untouched
  (its fused kernels and backward are the cheapest there);
- where a forward-AD level is active but no tangent can be read here: an autograd.Function
  (``setup_context`` style) whose forward computes ``O`` and ``LSE``, whose ``jvp`` computes
  ``O'`` (a second pass: ``torch.func`` hands the tangents over only after the forward) and
  whose backward is ``mfkernels::attention_backward`` (traced by dynamo, refused: see below).

The tangent is a stop-gradient (the MeanFlow target is one), so a tangent of a tangent (nested
``torch.func.jvp``) would be zero: that, and the ``torch.func`` transforms the custom ops have no
rule for (grad, vjp, vmap), run math attention instead. A gradient that reaches the fused
tangent (a loss on the jvp's tangent output not detached) raises, and so does one taken with
``create_graph=True`` through the fused attention (its flash backward is not differentiable).
Eagerly an autograd.Function checks both. Dynamo would inline that Function (inside
``torch.func.jvp`` it sees no input that requires grad), and the check with it, so traced, one
custom op gives ``O``, ``O'`` and ``LSE`` and its backward checks the gradient of ``O'`` when
it runs: a traced backward is handed zeros for an output returned and not differentiated, and
a zero gradient drops nothing, so only a nonzero one raises. A detached tangent's backward is
the flash backward alone, as eagerly; a second derivative through a compiled graph is refused
by torch itself (aot_autograd has no double backward).

``is_causal=True`` takes the kernels' causal mask (top-left aligned, as SDPA's),
``enable_gqa=True`` their grouped-query heads, and ``attn_mask`` their additive bias (a bool
mask as 0 / -inf; a float mask of float32 or q's dtype, added at float32 or wider: another
float dtype is refused, as SDPA refuses it). Under a forward-AD level, what the kernels do
not take (an ``attn_mask`` that requires grad or has a tangent, or comes with ``is_causal``;
``dropout_p > 0``, inputs that are not 4-D ``(batch, heads, seq, head_dim)`` or whose batch
and heads broadcast, mixed dtypes, empty sequences) runs PyTorch's math attention, which has
forward-mode AD, with a one-time warning naming the reason.

``torch.compile`` (torch 2.14, CPU, ``aot_eager`` backend; measured by
tests/mfkernels/test_sdpa_forward_ad.py and test_sdpa_inputs.py): dynamo traces the mode.
``torch.func.jvp`` or ``forward_ad`` through SDPA with the backward of its value is one graph
under ``fullgraph=True`` (``unpack_dual``, the custom op, ``make_dual``; not the eager
Function: under ``forward_ad`` dynamo traced its backward, whose check raised, a graph break),
and so is a patched model's plain forward and backward (PyTorch's SDPA). Dynamo breaks the
graph at an autograd.Function with a ``jvp``, and traced under ``torch.func.jvp`` both that
Function and the custom op on dual inputs gave a wrong tangent without an error, so a traced
call under a forward-AD level whose tangents cannot be read raises (without ``fullgraph``
dynamo then runs the frame eagerly). Transforms other than one jvp level around the call (a
jvp of a jvp, grad, vmap) run math attention as eagerly; its warning breaks the graph there.
``torch.func.jvp`` through a whole transformer does not trace for a reason of torch's own:
LayerNorm's forward AD hits an internal assert under dynamo (also without this mode); without
``fullgraph`` that frame runs eagerly, with the right result.
"""

import contextlib
import functools
import math
import threading

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor
from torch._C._functorch import TransformType
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from . import dispatch
from ._checks import broadcasts_to, check_sdpa_mask_dtype, requires_grad
from ._warnings import warn_at_caller
from .ops import _attention_jvp, attention_jvp

# The builtin behind F.scaled_dot_product_attention, captured before anyone can patch F.
_SDPA = torch._C._nn.scaled_dot_product_attention
_WARNED: set[str] = set()
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

COMPILE_JVP_UNSUPPORTED = (
    "mfkernels.sdpa_forward_ad: inside torch.compile, a forward-AD level is active but this "
    "scaled_dot_product_attention's tangents cannot be read (traced, the custom op and the "
    "autograd.Function both returned a wrong tangent without an error, torch 2.14): run it eagerly"
)


def _sdpa_arguments(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """SDPA's signature, so that positional and keyword calls bind the same way."""
    return query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa


def unsupported_reason(q, k, v, attn_mask, dropout_p, enable_gqa, is_causal=False) -> str | None:
    """Why the fused attention JVP cannot run this SDPA call, or None when it can."""
    if attn_mask is not None:
        is_mask = isinstance(attn_mask, Tensor) and attn_mask.dtype in (torch.bool, *_FLOATS)
        if not is_mask:
            return "attn_mask is neither bool nor floating point"
        if is_causal:
            return "attn_mask together with is_causal"
        if requires_grad(attn_mask) or fwAD.unpack_dual(attn_mask).tangent is not None:
            return "attn_mask requires grad or has a tangent (the kernels take a constant mask)"
    if dropout_p != 0.0:
        return f"dropout_p={dropout_p} (only 0 is fused)"
    tensors = (q, k, v)
    if not all(isinstance(t, Tensor) and t.dim() == 4 for t in tensors):
        return "inputs are not 4-D (batch, heads, seq, head_dim)"
    if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:
        return "batch or heads broadcast"
    if 0 in q.shape or 0 in k.shape or 0 in v.shape:  # before the heads' modulo
        return "an empty dimension"
    if k.shape[1] != q.shape[1] or v.shape[1] != q.shape[1]:
        if not enable_gqa:
            return "batch or heads broadcast"
        if v.shape[1] != k.shape[1] or q.shape[1] % k.shape[1]:
            return "enable_gqa with key/value heads that do not divide the query heads"
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        return "q, k, v are not of one floating dtype"
    if k.shape[-1] != q.shape[-1] or v.shape[2] != k.shape[2]:
        return "q, k, v shapes do not match"
    if attn_mask is not None and not broadcasts_to(attn_mask.shape, (*q.shape[:3], k.shape[2])):
        return "attn_mask does not broadcast to (batch, heads, seq_q, seq_k)"
    return None


def _additive_bias(attn_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """SDPA's ``attn_mask`` as the kernels' additive bias: a bool mask (True: take part) as 0 and
    -inf, a float mask as it is. A bool mask's broadcast dims (stride 0: an ``expand``ed
    key-padding mask, as Hugging Face models pass) stay broadcast: the kernels read any strides,
    and a dense ``(batch, heads, seq, seq)`` copy would cost more memory than attention itself."""
    if attn_mask is None or attn_mask.is_floating_point():
        return attn_mask
    stored = attn_mask[tuple(slice(0, 1) if st == 0 else slice(None) for st in attn_mask.stride())]
    bias = torch.zeros(stored.shape, dtype=dtype, device=attn_mask.device)
    return bias.masked_fill_(~stored, float("-inf")).expand(attn_mask.shape)


# Dynamo cannot trace the interpreter stack, and skipped under torch.compile, a nested jvp got
# a wrong tangent without a word. Dynamo enters a traced transform's level for real while it
# traces, so the stack read then (once, the result baked into the graph) is the call's own.
@torch.compiler.assume_constant_result
def transform_reason() -> str | None:
    """Why the functorch transforms around this call rule the fused path out, or None: it
    takes one ``torch.func.jvp`` level. The ``mfkernels`` custom ops have no ``torch.func``
    grad or vmap rule, and the fused tangent is a stop-gradient, so a tangent of a tangent
    (nested jvp) would silently be wrong: math attention has all of them."""
    kinds = [i.key() for i in torch._C._functorch.get_interpreter_stack() or ()]
    if any(kind != TransformType.Jvp for kind in kinds):
        return "a torch.func transform other than jvp (grad, vjp, vmap, functionalize)"
    if len(kinds) > 1:
        return "nested torch.func.jvp (the fused tangent is not differentiable)"
    return None


def _warn_once(reason: str):
    if reason not in _WARNED:
        _WARNED.add(reason)
        warn_at_caller(
            f"mfkernels.sdpa_forward_ad: {reason}; this scaled_dot_product_attention runs math attention"
        )


def _zeros_like(t: Tensor) -> Tensor:
    # A stride-0 view of one zero: a tangent that costs no memory (the kernels read strides).
    return t.new_zeros(()).expand_as(t)


def _tangent_or_zeros(tangent: Tensor | None, primal: Tensor) -> Tensor:
    return _zeros_like(primal) if tangent is None else tangent.detach()


class _FlashSdpa(torch.autograd.Function):
    """``(O, LSE)`` of attention with a ``jvp`` (``O'``) and the flash backward.

    q, k, v: (batch, heads, seq_q | seq_k, head_dim); O: (batch, heads, seq_q, head_dim);
    LSE: (batch, heads, seq_q) in float32 (float64 for float64 input), non-differentiable.
    """

    @staticmethod
    def forward(q, k, v, scale, causal, backend, bias):
        zeros = _zeros_like(q), _zeros_like(k), _zeros_like(v)
        o, _, lse = attention_jvp(q, k, v, *zeros, scale, backend, causal=causal, bias=bias)
        return o, lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, scale, causal, backend, bias = inputs
        o, lse = output
        ctx.save_for_backward(q, k, v, o, lse, bias)
        ctx.save_for_forward(q, k, v, bias)
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)
        ctx.scale, ctx.causal, ctx.backend = scale, causal, backend

    @staticmethod
    def backward(ctx, grad_o, _grad_lse):
        if grad_o is None:
            return None, None, None, None, None, None, None
        if torch.is_grad_enabled():
            raise RuntimeError(NO_CREATE_GRAPH)
        q, k, v, o, lse, bias = ctx.saved_tensors
        dq, dk, dv = torch.ops.mfkernels.attention_backward(
            grad_o, q, k, v, o, lse, ctx.scale, ctx.causal, ctx.backend, bias
        )
        return dq, dk, dv, None, None, None, None

    @staticmethod
    def jvp(ctx, q_dot, k_dot, v_dot, _scale_dot, _causal_dot, _backend_dot, _bias_dot):
        *qkv, bias = ctx.saved_tensors
        q, k, v = (t.detach() for t in qkv)
        tangents = (_tangent_or_zeros(t, p) for t, p in ((q_dot, q), (k_dot, k), (v_dot, v)))
        with torch.no_grad():  # the tangent is a stop-gradient target: never a graph
            o, o_dot, _ = attention_jvp(
                q, k, v, *tangents, ctx.scale, ctx.backend, causal=ctx.causal, bias=bias
            )
        if torch.is_grad_enabled():  # a gradient that reaches O' raises, as on the one-pass path
            _, o_dot = _Differentiable.apply(o, o_dot, *qkv, q_dot, k_dot, v_dot)
        return o_dot, None


def _visible_tangent(*tensors: Tensor) -> bool:
    """Whether a tangent of these inputs at the innermost forward-AD level can be read here:
    ``forward_ad`` dual tensors, and ``torch.func.jvp``'s inputs (its level's duals). Then one
    fused call gives value and tangent."""
    return any(fwAD.unpack_dual(t).tangent is not None for t in tensors)


TANGENT_IS_A_STOP_GRADIENT = (
    "mfkernels.sdpa_forward_ad: a gradient reached the tangent of a fused "
    "scaled_dot_product_attention, which is a stop-gradient (MeanFlow's target): detach the "
    "jvp's tangent output before a loss uses it, or run this jvp without the switch (math "
    "attention differentiates its tangent)"
)
NO_CREATE_GRAPH = (
    "mfkernels.sdpa_forward_ad: a gradient with create_graph=True through a fused "
    "scaled_dot_product_attention, whose flash backward is not differentiable: run it without "
    "the switch (math attention)"
)


class _Differentiable(torch.autograd.Function):
    """Eagerly, ``O`` and ``O'`` as they are, with a backward that refuses what the fused attention
    cannot give: a gradient through ``O'`` (a stop-gradient, computed without a graph) and a
    differentiable gradient (``create_graph=True``) through the flash backward, which would
    otherwise be silently dropped (the tangent's term of a loss) or count as a constant.
    ``q, k, v, q_dot, k_dot, v_dot``: inputs only, so that ``O'`` requires grad where they do."""

    @staticmethod
    def forward(o, o_dot, q, k, v, q_dot, k_dot, v_dot):
        return o.view_as(o), o_dot.view_as(o_dot)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_o, grad_o_dot):
        if grad_o_dot is not None:
            raise RuntimeError(TANGENT_IS_A_STOP_GRADIENT)
        if torch.is_grad_enabled():  # the engine's create_graph
            raise RuntimeError(NO_CREATE_GRAPH)
        return grad_o, None, None, None, None, None, None, None


@torch.library.custom_op("mfkernels::sdpa_tangent_gradient_check", mutates_args=())
def _tangent_gradient_check(grad_o_dot: Tensor) -> Tensor:
    """A zero (0-dim) for the gradient that reached a compiled fused tangent, or the error.
    At run time, not while tracing: the traced backward cannot tell a gradient from the zeros
    it is handed for an output nobody differentiated (a tangent returned from the compiled
    region and detached outside it), and a gradient that is zero drops nothing."""
    if bool(grad_o_dot.ne(0).any()):  # NaN too
        raise RuntimeError(TANGENT_IS_A_STOP_GRADIENT)
    return grad_o_dot.new_zeros(())


@_tangent_gradient_check.register_fake
def _(grad_o_dot):
    return grad_o_dot.new_zeros(())


@torch.library.custom_op("mfkernels::sdpa_dual_attention", mutates_args=())
def _compiled_dual_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_dot: Tensor,
    k_dot: Tensor,
    v_dot: Tensor,
    scale: float,
    causal: bool,
    backend: str,
    bias: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """attention_jvp as the op that :func:`_dual_attention` traces under torch.compile, where
    :class:`_Differentiable` is not kept (dynamo inlines its forward: inside torch.func.jvp it
    sees no input that requires grad), so ``O'`` is differentiable here and its backward
    refuses a gradient that reaches it (docs/design.md section 2). The kernels' call alone:
    :func:`attention_jvp`'s checks ran on the fake tensors while tracing."""
    with torch.no_grad():  # the inputs may require grad here: no graph inside the op
        return _attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale, causal, backend, bias)


@_compiled_dual_attention.register_fake
def _(q, k, v, q_dot, k_dot, v_dot, scale, causal, backend, bias):
    return attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale, backend, causal=causal, bias=bias)


def _compiled_dual_setup_context(ctx, inputs, output):
    q, k, v, _, _, _, scale, causal, backend, bias = inputs
    o, _, lse = output
    ctx.save_for_backward(q, k, v, o, lse, bias)
    ctx.mark_non_differentiable(lse)
    # Traced, a gradient for O' is None where none reaches it (a detached tangent: MeanFlow's
    # target), and that backward is the flash backward alone, as eagerly.
    ctx.set_materialize_grads(False)
    ctx.scale, ctx.causal, ctx.backend = scale, causal, backend


def _compiled_dual_backward(ctx, grad_o, grad_o_dot, _grad_lse):
    q, k, v, o, lse, bias = ctx.saved_tensors
    grads = [None] * 6
    if grad_o is not None:
        grads[:3] = torch.ops.mfkernels.attention_backward(
            grad_o, q, k, v, o, lse, ctx.scale, ctx.causal, ctx.backend, bias
        )
    if grad_o_dot is not None:
        # Added to the gradients so that the compiled backward keeps the check.
        zero = _tangent_gradient_check(grad_o_dot)
        like = (q, k, v) * 2  # each tangent has its primal's shape
        grads = [zero.expand_as(t) if g is None else g + zero for g, t in zip(grads, like, strict=True)]
    return *grads, None, None, None, None


_compiled_dual_attention.register_autograd(
    _compiled_dual_backward, setup_context=_compiled_dual_setup_context
)


def _dual_attention(q, k, v, scale, causal, backend, bias) -> Tensor:
    """O as a dual tensor (tangent O'), one attention_jvp call; reverse mode through the
    primal runs the flash backward (attention_jvp's own)."""
    primals, tangents = zip(*(fwAD.unpack_dual(t) for t in (q, k, v)), strict=True)
    if torch.compiler.is_compiling():
        # The tangents as they are (not detached): O' requires grad where they do, as eagerly.
        tangents = [_zeros_like(p) if t is None else t for t, p in zip(tangents, primals, strict=True)]
        o, o_dot, _ = _compiled_dual_attention(*primals, *tangents, scale, causal, backend, bias)
        return fwAD.make_dual(o, o_dot)
    inputs = (*primals, *tangents)  # all: under torch.func.jvp, requires_grad is not visible here
    tangents = [_tangent_or_zeros(t, p) for t, p in zip(tangents, primals, strict=True)]
    o, o_dot, _ = attention_jvp(*primals, *tangents, scale, backend, causal=causal, bias=bias)
    o_dot = o_dot.detach()
    if torch.is_grad_enabled():
        o, o_dot = _Differentiable.apply(o, o_dot, *inputs)
    return fwAD.make_dual(o, o_dot)


def flash_sdpa(query, key, value, *args, backend=None, **kwargs) -> Tensor:
    """``F.scaled_dot_product_attention`` (same arguments) with forward-mode AD on the fused
    attention JVP and flash backward, or math attention with a one-time warning where those
    do not apply. Without a forward-AD level the call is PyTorch's own, untouched: its fused
    kernels and backward are the cheapest there, and they take masks and causality."""
    dispatch.check_backend(backend)  # here, not at the first jvp: a typo would pass until then
    if fwAD._current_level < 0:  # torch.func.jvp and forward_ad.dual_level both enter one
        return _SDPA(query, key, value, *args, **kwargs)
    q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa = _sdpa_arguments(
        query, key, value, *args, **kwargs
    )
    check_sdpa_mask_dtype(attn_mask, q)
    # The transforms first: under vmap the inputs seen here have lost their batch dimension,
    # and "not 4-D" would misname the reason for a user's 4-D tensors.
    reason = transform_reason()
    if reason is None:
        reason = unsupported_reason(q, k, v, attn_mask, dropout_p, enable_gqa, is_causal)
    if reason is not None:
        _warn_once(reason)
        with sdpa_kernel(SDPBackend.MATH):
            return _SDPA(query, key, value, *args, **kwargs)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    backend = "" if backend is None else backend  # the backward op's schema takes a str: "" is "not given"
    causal = bool(is_causal)
    bias = _additive_bias(attn_mask, q.dtype)
    if bias is not None:
        bias = bias.expand(*q.shape[:3], k.shape[2])  # the shape the backward op is handed
    if _visible_tangent(q, k, v):
        return _dual_attention(q, k, v, scale, causal, backend, bias)
    if torch.compiler.is_compiling():
        # Traced under a jvp, the autograd.Function (its jvp dropped: dynamo does not trace
        # one) and the custom op on dual inputs both gave a wrong tangent without an error.
        raise NotImplementedError(COMPILE_JVP_UNSUPPORTED)
    return _FlashSdpa.apply(q, k, v, scale, causal, backend, bias)[0]


# Python torch functions that call SDPA by its name in torch.nn.functional. A mode is switched
# off while it handles a call, so it never sees the SDPA inside these: during one, the name
# is rebound to :func:`_sdpa_inside_functional`, process-wide but read per thread.
_CALL_SDPA_INSIDE = (F.multi_head_attention_forward,)
_REBINDING = threading.Lock()
_rebound_calls = 0  # calls in flight, over all threads, that need the name rebound
_unbound_sdpa = _SDPA  # what the name held before the first of them
_thread = threading.local()  # .backends: the backends of this thread's calls in flight


def _sdpa_inside_functional(*args, **kwargs):
    backends = getattr(_thread, "backends", None)
    if not backends:  # another thread's call, outside any of ours: what the name held
        return _unbound_sdpa(*args, **kwargs)
    return flash_sdpa(*args, backend=backends[-1], **kwargs)


@contextlib.contextmanager
def _functional_sdpa_replaced(backend):
    global _rebound_calls, _unbound_sdpa
    if torch.compiler.is_compiling():
        # Dynamo inlines the call and reads the rebound name while it traces: nothing runs
        # concurrently there, and it does not trace locks.
        original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = functools.partial(flash_sdpa, backend=backend)
        try:
            yield
        finally:
            F.scaled_dot_product_attention = original
        return
    # Counted under a lock, not saved and restored per call: two threads' calls that overlap
    # would otherwise leave the name rebound for good (the second saving the first's rebinding).
    with _REBINDING:
        if _rebound_calls == 0:
            _unbound_sdpa = F.scaled_dot_product_attention
            F.scaled_dot_product_attention = _sdpa_inside_functional
        _rebound_calls += 1
    backends = _thread.__dict__.setdefault("backends", [])
    backends.append(backend)
    try:
        yield
    finally:
        backends.pop()
        with _REBINDING:
            _rebound_calls -= 1
            if _rebound_calls == 0:
                F.scaled_dot_product_attention = _unbound_sdpa


class _SdpaMode(TorchFunctionMode):
    """Routes ``scaled_dot_product_attention`` to :func:`flash_sdpa`; everything else as is."""

    def __init__(self, backend: str | None = None):
        super().__init__()
        self.backend = backend

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SDPA:
            return flash_sdpa(*args, backend=self.backend, **kwargs)
        if func in _CALL_SDPA_INSIDE:
            with _functional_sdpa_replaced(self.backend):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def sdpa_forward_ad(backend: str | None = None) -> contextlib.AbstractContextManager:
    """A context under which ``F.scaled_dot_product_attention`` has forward-mode AD
    (``torch.func.jvp``, ``torch.autograd.forward_ad``) on the fused attention JVP and a
    flash backward. ``backend``: as for :func:`mfkernels.attention_jvp`, checked here.

    Example::

        with mfkernels.sdpa_forward_ad():
            out, out_dot = torch.func.jvp(model, (x,), (x_dot,))
    """
    dispatch.check_backend(backend)
    return _SdpaMode(backend)


class _ForwardWithFlashSdpa:
    """The class's ``forward`` of ``module`` under :func:`sdpa_forward_ad`. An object of a
    module-level class, not a bound method, so that pickle (``torch.save`` of a whole model)
    can rebuild it: a method pickles as a lookup of its name on the module, which finds none.
    ``copy.deepcopy`` and pickle give an EMA copy or a loaded model its own."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __call__(self, *args, **kwargs):
        module = self.module
        with sdpa_forward_ad(module._mfk_sdpa_backend):
            return type(module).forward(module, *args, **kwargs)


def patch_sdpa(model: torch.nn.Module, backend: str | None = None) -> torch.nn.Module:
    """``model``, its ``forward`` now run under :func:`sdpa_forward_ad` (in place: the state
    dict and parameters are unchanged, a deep copy or a pickled and loaded model stays patched;
    patching again only sets ``backend``). Returns ``model``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    own_forward = model.__dict__.get("forward")
    if own_forward is not None and not isinstance(own_forward, _ForwardWithFlashSdpa):
        raise TypeError("patch_sdpa wraps the class's forward; this model has its own forward attribute")
    dispatch.check_backend(backend)
    model._mfk_sdpa_backend = backend
    model.forward = _ForwardWithFlashSdpa(model)
    return model
