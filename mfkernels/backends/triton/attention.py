"""Triton attention value and tangent in one pass: ``O``, ``O'`` and the row ``LSE``, and the
primal backward ``dO -> (dQ, dK, dV)`` from the saved ``O`` and ``LSE`` (docs/design.md
section 2). The launchers of ``attention_kernels.py`` and ``attention_backward_kernels.py``,
with the signatures of ``reference.attention_jvp`` and ``reference.attention_backward``.
"""

import os
import warnings

import torch
from torch import Tensor

from ...layouts import attention_output
from .. import library_attention
from .attention_backward_kernels import _attn_bwd_delta_kernel, _attn_bwd_dkdv_kernel, _attn_bwd_dq_kernel
from .attention_configs import autotune
from .attention_kernels import _attn_jvp_fwd_kernel
from .triton_compat import INTERPRET, device_guard, triton, triton_unsupported, vector_alignment

MAX_HEAD_DIM = 128
# CUDA's limit on a grid's y and z: the launches put heads on y and the batch on z.
MAX_GRID_YZ = 65535
# Rows of a tile at most (BLOCK_M, BLOCK_N): a tile's row offsets from its first row are int32.
MAX_TILE_ROWS = 128
DQ_ENV_VAR = "MFK_ATTENTION_DQ"
LOADS_ENV_VAR = "MFK_ATTENTION_LOADS"
BACKWARD_ENV_VAR = "MFK_ATTENTION_BACKWARD"

# Module globals the launchers look up at call time (benchmarks/triton_static.py swaps them).
_attn_jvp_fwd = autotune(_attn_jvp_fwd_kernel, "fwd")
_attn_bwd_dkdv = autotune(_attn_bwd_dkdv_kernel, "dkdv")
_attn_bwd_dq = autotune(_attn_bwd_dq_kernel, "dq")


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def head_dim_parts(head_dim: int) -> dict:
    """The kernels' head-dim tiling: ``BLOCK_D`` columns, and with ``SPLIT`` a second part of
    ``BLOCK_E`` (tl.dot wants power-of-two tiles of at least 16). A head dim just above a
    power of two takes two parts instead of padding to the next one: 72 = 64 + 16 (8 masked)
    does 80/128 of the padded tile's tensor-core work; 96 = 64 + 32 none wasted."""
    padded = _block_d(head_dim)
    low = max(16, padded // 2)
    high = max(16, triton.next_power_of_2(head_dim - low)) if head_dim > low else 0
    if high == 0 or low + high >= padded:
        return {"BLOCK_D": padded, "BLOCK_E": 16, "SPLIT": False}
    return {"BLOCK_D": low, "BLOCK_E": high, "SPLIT": True}


def _stride_align(*tensors: Tensor) -> int:
    """The kernels' ``ALIGN``: what divides every batch, head and row stride of ``tensors``."""
    return vector_alignment(tensors[0].element_size(), *(s for t in tensors for s in t.stride()[:3]))


def launch_grid(n_rows: int, block: int, heads: int, batch: int) -> tuple[int, int, int]:
    """The attention kernels' grid: ``(cdiv(n_rows, block), heads, batch)``. Blocks run in the
    order of one ``(batch * heads)`` axis (rows fastest, then heads), but ``batch * heads`` past
    CUDA's 65535 on one axis (4096 windows of 16 heads) still launches: each of heads and batch
    must stay within it (:func:`jvp_unsupported`)."""
    return triton.cdiv(n_rows, block), heads, batch


def wide_rows(*tensors: Tensor | None) -> bool:
    """The kernels' ``WIDE_ROWS``: whether a row (query, key) or column position times its
    stride can pass 2**31 - 1 within one head of ``tensors`` (B, H, rows, cols): a dense bias
    past 46340 x 46340, a packed qkv of 3 x 1152 wide rows past 621378 tokens. Then the loops
    step their pointers by int64 offsets; below, by int32 ones, which the forward's d = 72
    128 x 64 tiles at 255 registers need (int64 steps spill 24-48 bytes there on sm_90)."""
    return any(
        (t.shape[dim] + MAX_TILE_ROWS) * abs(t.stride(dim)) >= 2**31
        for t in tensors
        if t is not None
        for dim in (2, 3)
    )


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs need IEEE dots for the 1e-5 tolerance; 16-bit inputs ignore the setting.
    return "ieee" if dtype == torch.float32 else "tf32"


def jvp_unsupported(q, k, v, *rest) -> str | None:
    """Why the triton kernels cannot run these inputs (then the dispatch falls back)."""
    reason = triton_unsupported(q, k, v)
    if reason is not None:
        return reason
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"supports head_dim <= {MAX_HEAD_DIM}, got {q.shape[-1]}"
    if v.shape[-1] != q.shape[-1]:
        return f"needs v's head_dim equal to q's ({q.shape[-1]}), got {v.shape[-1]}"
    if max(q.shape[:2]) > MAX_GRID_YZ:
        return f"launches batch and heads on grid axes of at most {MAX_GRID_YZ}, got {tuple(q.shape[:2])}"
    tensors = [t for t in (q, k, v, *rest) if isinstance(t, Tensor) and t.dim() == 4]
    if any(MAX_TILE_ROWS * abs(s) >= 2**31 for t in tensors for s in t.stride()[2:]):
        return "needs row and column strides below 2**24 elements (a tile's offsets are int32)"
    return None


def backward_unsupported(grad_o, q, k, v, o, lse, scale, causal=False, bias=None) -> str | None:
    return jvp_unsupported(q, k, v, grad_o, o, bias)


def _bias_args(bias, like: Tensor) -> tuple:
    """The kernels' ``BIAS`` and its four strides: ``bias`` (4-D, broadcast dims at stride 0), or
    a placeholder the kernels never read."""
    if bias is None:
        return like, 0, 0, 0, 0
    return bias, *bias.stride()


def _key_bias(bias) -> bool:
    """Whether the kernels may read ``bias`` as one row of keys for every query (its query
    stride 0: a key-padding mask broadcast over queries), once per key instead of per query."""
    return bias is not None and bias.stride(2) == 0


def attention_jvp_triton(q, k, v, q_dot, k_dot, v_dot, scale, causal=False, bias=None):
    """Fused ``(O, O', LSE)`` with :func:`_attn_jvp_fwd_kernel`; signature of
    :func:`reference.attention_jvp`. Inputs (B, H, N, d) of any strides; K, V and their
    tangents may have fewer heads (grouped-query attention)."""
    batch, heads, n_q, head_dim = q.shape
    kv_heads, n_k = k.shape[1:3]
    o = attention_output(batch, heads, n_q, head_dim, q)
    o_dot = attention_output(batch, heads, n_q, head_dim, q)
    lse = torch.empty((batch, heads, n_q), dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, o_dot, lse

    def grid(meta):
        return launch_grid(n_q, meta["BLOCK_M"], heads, batch)

    tma = kv_by_tma(k, v, k_dot, v_dot)
    with device_guard(q):
        if tma:
            _scratch_allocator()
        bias_tensor, *bias_strides = _bias_args(bias, lse)
        _attn_jvp_fwd[grid](
            q, k, v, q_dot, k_dot, v_dot, o, o_dot, lse, bias_tensor,
            *q.stride(), *k.stride(), *v.stride(), *q_dot.stride(), *k_dot.stride(), *v_dot.stride(),
            *o.stride()[:3], *bias_strides,
            heads, n_q, n_k, float(scale),
            HEAD_DIM=head_dim, **head_dim_parts(head_dim), PREC=_precision(q.dtype),
            ALIGN=_stride_align(q, k, v, q_dot, k_dot, v_dot, o), TMA=tma, CAUSAL=bool(causal),
            KV_GROUP=heads // kv_heads, HAS_BIAS=bias is not None, KEY_BIAS=_key_bias(bias),
            WIDE_ROWS=wide_rows(q, k, v, q_dot, k_dot, v_dot, o, bias),
        )  # fmt: skip
    return o, o_dot, lse


def _choice(env_var: str, choices: tuple[str, ...]) -> str:
    """The value of a kernel-choice variable (its first choice when unset), checked."""
    value = os.environ.get(env_var, "").strip() or choices[0]
    if value not in choices:
        raise ValueError(f"{env_var} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def dq_by_atomics() -> bool:
    """Whether the backward adds dQ up with atomics inside the dK/dV kernel (five products of
    N_q x N_k x d, summed in a varying order) instead of in a kernel of its own (seven,
    deterministic): ``MFK_ATTENTION_DQ=atomic`` or ``separate`` (the default), read at each call
    (docs/attention-tuning.md)."""
    return _choice(DQ_ENV_VAR, ("separate", "atomic")) == "atomic"


def kv_by_tma(k: Tensor, v: Tensor, k_dot: Tensor, v_dot: Tensor) -> bool:
    """Whether the forward reads K, V and their tangents through tensor descriptors (TMA):
    ``MFK_ATTENTION_LOADS=tma`` (default ``pointers``), read at each call, and then only on
    Hopper or newer (or in the interpreter) and where TMA can address the tensors: unit
    head-dim stride, every other stride and the start 16-byte aligned (docs/attention-tuning.md)."""
    if _choice(LOADS_ENV_VAR, ("pointers", "tma")) != "tma":
        return False
    if not (hasattr(triton, "set_allocator") and hasattr(triton.language, "make_tensor_descriptor")):
        return False  # a Triton before in-kernel tensor descriptors
    if not INTERPRET and _arch(k) < 90:
        return False
    for t in (k, v, k_dot, v_dot):
        size = t.element_size()
        if t.stride(-1) != 1 or t.data_ptr() % 16 or any(s * size % 16 for s in t.stride()[:3]):
            return False
    return True


def backward_library() -> str | None:
    """The library whose backward runs from our saved O and LSE instead of our kernels:
    ``MFK_ATTENTION_BACKWARD=cudnn`` or ``flash``; None for ``triton`` (the default), read at
    each call (docs/attention-tuning.md)."""
    choice = _choice(BACKWARD_ENV_VAR, ("triton", *library_attention.LIBRARIES))
    return None if choice == "triton" else choice


_warned_library_fallbacks: set[tuple[str, str]] = set()


def _library_fallback(library: str, reason: str) -> None:
    """Say once per library and reason that our backward runs instead of the library's."""
    if (library, reason) not in _warned_library_fallbacks:
        _warned_library_fallbacks.add((library, reason))
        warnings.warn(f"{BACKWARD_ENV_VAR}={library}: {reason}; running the triton backward", stacklevel=3)


def _arch(t: Tensor) -> int:
    """The compute capability (major * 10 + minor) kernels on ``t`` are built for: its GPU's, or
    for CPU tensors the driver's target (``benchmarks/triton_static.py`` compiles for one)."""
    if t.is_cuda:
        major, minor = torch.cuda.get_device_capability(t.device)
        return 10 * major + minor
    try:
        return triton.runtime.driver.active.get_current_target().arch
    except RuntimeError:  # no GPU driver at all: no target
        return 0


def _torch_scratch(size: int, alignment: int, stream):
    """Triton's scratch memory (where a kernel writes the tensor descriptors it makes) from torch."""
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    return torch.empty(size, dtype=torch.int8, device=device)


def _scratch_allocator():
    """Give Triton torch's memory for kernel scratch, unless the caller has set an allocator."""
    try:
        from triton.runtime._allocation import NullAllocator, _allocator

        if not isinstance(_allocator.get(), NullAllocator):
            return
    except ImportError:  # another Triton layout: set ours
        pass
    triton.set_allocator(_torch_scratch)


def attention_backward_triton(grad_o, q, k, v, o, lse, scale, causal=False, bias=None):
    """Primal ``(dQ, dK, dV)`` from the saved ``O`` and float32 ``LSE``; signature of
    :func:`reference.attention_backward`. Three launches: delta, dK/dV, dQ (two with
    :func:`dq_by_atomics`, and a scaling of the fp32 dQ sums), or a library's backward
    (:func:`backward_library`)."""
    library = backward_library()
    if library is not None:
        reason = library_attention.unsupported(library, q, k, v, causal, bias)
        if reason is None:
            try:
                return library_attention.attention_backward(library, grad_o, q, k, v, o, lse, scale, causal)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as exc:  # e.g. no cuDNN plan for this shape on this version
                reason = f"{library} failed: {str(exc).strip().splitlines()[0]}"
        _library_fallback(library, reason)
    batch, heads, n_q, head_dim = q.shape
    kv_heads, n_k = k.shape[1:3]
    dq = torch.empty((batch, heads, n_q, head_dim), dtype=q.dtype, device=q.device)
    dk = torch.empty((batch, kv_heads, n_k, head_dim), dtype=q.dtype, device=q.device)
    dv = torch.empty_like(dk)
    if dq.numel() == 0:
        return dq, dk, dv
    lse = lse.to(torch.float32).contiguous()
    delta = torch.empty_like(lse)
    parts, prec = head_dim_parts(head_dim), _precision(q.dtype)
    align = _stride_align(q, k, v, grad_o, o, dq, dk)
    atomic = dq_by_atomics()
    dq_sums = torch.zeros(dq.shape, dtype=torch.float32, device=q.device) if atomic else dk
    with device_guard(q):
        _attn_bwd_delta_kernel[launch_grid(n_q, 64, heads, batch)](
            o, grad_o, delta, *o.stride(), *grad_o.stride(), heads, n_q,
            HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), BLOCK_M=64, ALIGN=align,
        )  # fmt: skip
        strides = (*q.stride(), *k.stride(), *v.stride(), *grad_o.stride())
        bias_tensor, *bias_strides = _bias_args(bias, lse)
        flags = dict(CAUSAL=bool(causal), KV_GROUP=heads // kv_heads)
        flags.update(HAS_BIAS=bias is not None, KEY_BIAS=_key_bias(bias))
        flags.update(WIDE_ROWS=wide_rows(q, k, v, grad_o, dq, dk, bias, dq_sums if atomic else None))
        _attn_bwd_dkdv[lambda meta: launch_grid(n_k, meta["BLOCK_N"], kv_heads, batch)](
            q, k, v, grad_o, lse, delta, dk, dv, dq_sums, bias_tensor,
            *strides, *dk.stride()[:3], *dq_sums.stride()[:3], *bias_strides,
            kv_heads, n_q, n_k, float(scale), HEAD_DIM=head_dim, **parts, PREC=prec, ALIGN=align,
            ATOMIC_DQ=atomic, **flags,
        )  # fmt: skip
        if atomic:
            return torch.mul(dq_sums, scale, out=dq_sums).to(q.dtype), dk, dv
        _attn_bwd_dq[lambda meta: launch_grid(n_q, meta["BLOCK_M"], heads, batch)](
            q, k, v, grad_o, lse, delta, dq, bias_tensor, *strides, *dq.stride()[:3], *bias_strides,
            heads, n_q, n_k, float(scale), HEAD_DIM=head_dim, **parts, PREC=prec, ALIGN=align, **flags,
        )  # fmt: skip
    return dq, dk, dv
