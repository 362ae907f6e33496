"""Attention value and tangent in one pass: ``O``, ``O'`` and the row ``LSE`` (SPEC.md section 2).

With ``S = scale Q K^T``, ``P = softmax(S)``, ``O = P V`` and ``S' = scale (Q' K^T + Q K'^T)``:
``O' = P V' + (P * S') V - rowsum(P * S') O``. Tensors are ``(batch, heads, seq, head_dim)``
as in ``F.scaled_dot_product_attention``; ``LSE`` is ``(batch, heads, seq)`` in float32
(float64 for float64 input). The backward is the primal one, ``dO -> (dQ, dK, dV)``, from
the saved ``O`` and ``LSE``; tangent inputs get no gradient.
"""

import torch
from torch import Tensor

from . import dispatch, reference
from ._checks import check_pair, check_same_device, check_same_dtype


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return reference.compute_dtype(dtype)


@torch.library.custom_op("mfkernels::attention_jvp", mutates_args=())
def _attention_jvp_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_dot: Tensor,
    k_dot: Tensor,
    v_dot: Tensor,
    scale: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    o, o_dot, lse = dispatch.call("attention_jvp", backend, q, k, v, q_dot, k_dot, v_dot, scale)
    return o.contiguous(), o_dot.contiguous(), lse.contiguous()


@_attention_jvp_op.register_fake
def _(q, k, v, q_dot, k_dot, v_dot, scale, backend):
    o_shape = (*q.shape[:-1], v.shape[-1])
    return q.new_empty(o_shape), q.new_empty(o_shape), q.new_empty(q.shape[:-1], dtype=_lse_dtype(q.dtype))


@torch.library.custom_op("mfkernels::attention_backward", mutates_args=())
def _attention_backward_op(
    grad_o: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, scale: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = dispatch.call("attention_backward", backend, grad_o.contiguous(), q, k, v, o, lse, scale)
    return dq.to(q.dtype).contiguous(), dk.to(k.dtype).contiguous(), dv.to(v.dtype).contiguous()


@_attention_backward_op.register_fake
def _(grad_o, q, k, v, o, lse, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, _, _, _, scale, backend = inputs
    o, o_dot, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.scale, ctx.backend = scale, backend
    ctx.mark_non_differentiable(o_dot, lse)


def _backward(ctx, grad_o, _grad_o_dot, _grad_lse):
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _attention_backward_op(grad_o, q, k, v, o, lse, ctx.scale, ctx.backend)
    return dq, dk, dv, None, None, None, None, None


_attention_jvp_op.register_autograd(_backward, setup_context=_setup_context)
dispatch.register("attention_jvp", "reference", reference.attention_jvp)
dispatch.register("attention_backward", "reference", reference.attention_backward)


def attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale=None, backend=None):
    """Returns ``(o, o_dot, lse)`` for ``(batch, heads, seq, head_dim)`` inputs.

    ``scale`` defaults to ``head_dim ** -0.5``. Any sequence length >= 1; keys and values
    may have their own length (``seq_k``), shared by ``k`` and ``v``.
    """
    check_pair("q", q, q_dot)
    check_pair("k", k, k_dot)
    check_pair("v", v, v_dot)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be (batch, heads, seq, head_dim), got shape {tuple(t.shape)}")
    if k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"q, k, v must share (batch, heads): got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have q's head_dim {q.shape[-1]}, got {k.shape[-1]}")
    if v.shape[2] != k.shape[2]:
        raise ValueError(f"v must have k's sequence length {k.shape[2]}, got {v.shape[2]}")
    if q.shape[2] < 1 or k.shape[2] < 1:
        raise ValueError("q and k need a sequence length of at least 1")
    check_same_dtype(q=q, k=k, v=v)
    check_same_device(q=q, k=k, v=v)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return _attention_jvp_op(q, k, v, q_dot, k_dot, v_dot, scale, dispatch.check_backend(backend))
