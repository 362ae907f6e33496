"""The csrc extension (``mfkernels._C``, built by ``pip install -e .``) as the ``cpu`` and
``cuda`` backends of the memory-bound ops: LayerNorm + adaLN modulate (value, tangent and the
primal backward), bias + GELU-tanh, SiLU and the gated residual (docs/design.md section 2).

The functions here have exactly the signatures of their counterparts in ``mfkernels/reference.py``.
They make the large operands contiguous, allocate the outputs with torch and hand the kernels
raw pointers (``_C.TensorArg``) plus the thread count (CPU) or the current CUDA stream; the
extension checks every argument again and raises ValueError/TypeError naming it. Per-sample
modulation vectors (``shift``/``scale``/``gate``, ``(batch, dim)``) are passed as they come --
usually non-contiguous chunks of one ``(batch, 6 * dim)`` adaLN output -- with their row stride
and their own dtype; no copy.

``CPU_OPS`` is empty when the extension is absent (auto dispatch then keeps using
``reference`` on the CPU), ``CUDA_OPS`` unless it was built with nvcc (``_C.WITH_CUDA``).
"""

import importlib
import os
import warnings

import torch

from ..reference import compute_dtype, sum_rows
from . import Implementation

# csrc/mfkernels_api.cpp's kApiVersion: the bindings this module calls, as it calls them.
API_VERSION = 4
_NOT_BUILT = "mfkernels._C is not built (pip install -e . builds it)"

try:
    _C = importlib.import_module("mfkernels._C")
    import_error = None
except ModuleNotFoundError as e:
    if e.name != "mfkernels._C":
        raise
    _C, import_error = None, _NOT_BUILT
except ImportError as e:  # built, but does not load (e.g. built for another Python)
    _C, import_error = None, f"mfkernels._C does not load: {e}"
if _C is not None and getattr(_C, "API_VERSION", None) != API_VERSION:
    # An editable install keeps the module its last build left, whatever the sources say now.
    found = getattr(_C, "API_VERSION", "none")
    _C, import_error = (
        None,
        (
            f"mfkernels._C is stale: built from other sources (API version {found}, this package "
            f"needs {API_VERSION}); rebuild it with pip install -e ."
        ),
    )
if import_error not in (None, _NOT_BUILT):  # not built: the install said so, and auto never needs it
    warnings.warn(f"{import_error}; the cpu and cuda backends are off", stacklevel=2)

_isa_wanted = os.environ.get("MFK_CPU_ISA", "")
if _C is not None and _isa_wanted not in ("", "auto") and _C.cpu_isa() != _isa_wanted:
    # The extension falls back to the best ISA by itself; a typo must not pass for a choice.
    why = "this CPU lacks it" if _isa_wanted in _C.CPU_ISAS else f"not one of {('auto', *_C.CPU_ISAS)}"
    warnings.warn(f"MFK_CPU_ISA={_isa_wanted!r} ignored ({why}); using {_C.cpu_isa()!r}", stacklevel=2)

# Dtype codes of csrc/kernels.h (enum class DType).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def available() -> bool:
    return _C is not None


def has_cuda() -> bool:
    return _C is not None and bool(_C.WITH_CUDA)


def _arg(t: torch.Tensor):
    device = -1 if t.device.type == "cpu" else t.device.index
    return _C.TensorArg(t.data_ptr(), DTYPE_CODES[t.dtype], t.shape, t.stride(), device)


def _unit_col_stride(t: torch.Tensor) -> torch.Tensor:
    """A per-sample (batch, dim) vector or a (dim,) bias as the kernels read it: any row
    stride, unit column stride. (Keep the result alive until the kernel has run.)"""
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def _contiguous_aligned(t: torch.Tensor) -> torch.Tensor:
    """Contiguous and, on CUDA, 16-byte aligned (an offset view is copied): the LayerNorm
    kernels need vector loads to hold long rows in registers."""
    t = t.contiguous()
    return t.clone() if t.device.type == "cuda" and t.data_ptr() % 16 else t


def _launch(x: torch.Tensor) -> dict:
    if x.device.type == "cuda":
        return {"threads": 1, "stream": torch.cuda.current_stream(x.device).cuda_stream}
    return {"threads": torch.get_num_threads(), "stream": 0}


# ------------------------------------------------------------------------------ ops


def layernorm_modulate_jvp(x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-6):
    """``(m, m_dot)`` as :func:`mfkernels.reference.layernorm_modulate_jvp`; one pass per row."""
    x, x_dot = _contiguous_aligned(x), _contiguous_aligned(x_dot)
    vecs = [_unit_col_stride(t) for t in (shift, scale, shift_dot, scale_dot)]
    m, m_dot = torch.empty_like(x), torch.empty_like(x)
    if x.numel() == 0:  # no rows: nothing to launch (a CUDA grid may not be empty)
        return m, m_dot
    _C.ln_modulate_jvp(_arg(x), _arg(x_dot), *map(_arg, vecs), _arg(m), _arg(m_dot), float(eps), **_launch(x))
    return m, m_dot


def layernorm_modulate_backward(grad_m, x, scale, eps=1e-6):
    """``(dx, dshift, dscale)`` as :func:`mfkernels.reference.layernorm_modulate_backward`;
    ``dshift``/``dscale`` come back in the accumulation dtype (float32, float64 for float64)."""
    x, scale = _contiguous_aligned(x), _unit_col_stride(scale)
    grad_m = _contiguous_aligned(grad_m.to(x.dtype))
    batch, tokens, dim = x.shape
    acc = compute_dtype(x.dtype)
    dx = torch.empty_like(x)
    if x.numel() == 0:  # sums over no tokens
        return dx, x.new_zeros((batch, dim), dtype=acc), x.new_zeros((batch, dim), dtype=acc)
    dshift = x.new_empty((batch, dim), dtype=acc)
    dscale = x.new_empty((batch, dim), dtype=acc)
    workspace = None
    if x.device.type == "cuda":
        numel = _C.cuda_ln_bwd_workspace_numel(batch, tokens, dim, DTYPE_CODES[x.dtype])
        workspace = torch.empty(numel, dtype=torch.float32, device=x.device)
    _C.ln_modulate_backward(
        _arg(grad_m), _arg(x), _arg(scale), _arg(dx), _arg(dshift), _arg(dscale), float(eps),
        None if workspace is None else _arg(workspace), **_launch(x),
    )  # fmt: skip
    return dx, dshift, dscale


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as the GELU kernels read it: rows of its last dim, so a 0-d tensor is one row of one."""
    return t.contiguous().reshape(1) if t.dim() == 0 else t.contiguous()


def gelu_tanh(x, bias=None):
    """``gelu_tanh(x + bias)``, the value alone (CPU; on CUDA torch's own GELU serves)."""
    shape = x.shape
    x = _rows(x)
    bias = None if bias is None else _unit_col_stride(bias)
    y = torch.empty_like(x)
    if x.numel() > 0:
        _C.gelu_tanh(_arg(x), None if bias is None else _arg(bias), _arg(y), threads=torch.get_num_threads())
    return y.view(shape)


def gelu_tanh_jvp(x, x_dot, bias=None):
    """``(gelu_tanh(x + bias), gelu_tanh'(x + bias) x_dot)``; ``bias`` is ``(x.shape[-1],)``."""
    shape = x.shape
    x, x_dot = _rows(x), _rows(x_dot)
    bias = None if bias is None else _unit_col_stride(bias)
    y, y_dot = torch.empty_like(x), torch.empty_like(x)
    if x.numel() > 0:
        _C.gelu_tanh_jvp(
            _arg(x), _arg(x_dot), None if bias is None else _arg(bias), _arg(y), _arg(y_dot), **_launch(x)
        )
    return y.view(shape), y_dot.view(shape)


def gelu_tanh_backward(grad_y, x, bias=None):
    """``(dx, dbias)`` as :func:`mfkernels.reference.gelu_tanh_backward`. On the CPU one pass
    over x and dy, the bias gradient summed from the unrounded ``dx``; on CUDA the JVP kernel
    with ``grad_y`` as the tangent (GELU's Jacobian is diagonal), the bias gradient summed from
    the rounded ``dx`` for 16-bit x, as torch's autocast does."""
    if x.device.type == "cuda":
        dx = gelu_tanh_jvp(x, grad_y, bias)[1]
        if bias is None:
            return dx, None
        return dx, sum_rows(dx, dtype=compute_dtype(x.dtype))
    shape = x.shape
    x, grad_y = _rows(x), _rows(grad_y)
    dx = torch.empty_like(x)
    dbias = None if bias is None else x.new_empty(bias.shape, dtype=compute_dtype(x.dtype))
    if x.numel() == 0:
        return dx.view(shape), None if dbias is None else dbias.zero_()
    bias = None if bias is None else _unit_col_stride(bias)
    _C.gelu_tanh_backward(
        _arg(x), _arg(grad_y), None if bias is None else _arg(bias), _arg(dx),
        None if dbias is None else _arg(dbias), threads=torch.get_num_threads(),
    )  # fmt: skip
    return dx.view(shape), dbias


def silu_jvp(x, x_dot):
    """``(x sigmoid(x), silu'(x) x_dot)``."""
    x, x_dot = x.contiguous(), x_dot.contiguous()
    y, y_dot = torch.empty_like(x), torch.empty_like(x)
    if x.numel() == 0:
        return y, y_dot
    _C.silu_jvp(_arg(x), _arg(x_dot), _arg(y), _arg(y_dot), **_launch(x))
    return y, y_dot


def gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot):
    """``(x + gate f, x_dot + gate_dot f + gate f_dot)``; ``f`` may have another dtype than ``x``."""
    x, x_dot, f, f_dot = x.contiguous(), x_dot.contiguous(), f.contiguous(), f_dot.contiguous()
    gate, gate_dot = _unit_col_stride(gate), _unit_col_stride(gate_dot)
    y, y_dot = torch.empty_like(x), torch.empty_like(x)
    if x.numel() == 0:
        return y, y_dot
    _C.gated_residual_jvp(
        _arg(x), _arg(x_dot), _arg(gate), _arg(gate_dot), _arg(f), _arg(f_dot), _arg(y), _arg(y_dot),
        **_launch(x),
    )  # fmt: skip
    return y, y_dot


# ---------------------------------------------------------------- backend support


def _unsupported_on(device_type: str, dtypes, dtype_note: str, args) -> str | None:
    """Why these arguments are not all ``device_type`` tensors of one of ``dtypes``, or None."""
    for t in (a for a in args if isinstance(a, torch.Tensor)):
        if t.device.type != device_type:
            return f"needs {device_type.upper()} tensors, got {t.device}"
        if t.dtype not in dtypes:
            return f"does not take {t.dtype}{dtype_note}"
    return None


def cpu_unsupported(*args) -> str | None:
    return _unsupported_on("cpu", DTYPE_CODES, "", args)


def cuda_unsupported(*args) -> str | None:
    return _unsupported_on("cuda", CUDA_DTYPES, " (float32, float16, bfloat16 only)", args)


def cuda_ln_unsupported(*args) -> str | None:
    reason = cuda_unsupported(*args)
    x = args[0]  # x (forward) or grad_m (backward): (batch, tokens, dim) either way
    if reason is None and x.dim() == 3:
        limit = _C.cuda_ln_max_dim(DTYPE_CODES[x.dtype], x.shape[-1])
        if x.shape[-1] > limit:
            reason = f"takes rows of at most {limit} elements for {x.dtype}, got {x.shape[-1]}"
    return reason


_FUNCTIONS = {
    "layernorm_modulate_jvp": layernorm_modulate_jvp,
    "layernorm_modulate_backward": layernorm_modulate_backward,
    "gelu_tanh_jvp": gelu_tanh_jvp,
    "gelu_tanh_backward": gelu_tanh_backward,
    "silu_jvp": silu_jvp,
    "gated_residual_jvp": gated_residual_jvp,
}


# On CUDA torch's own GELU serves the value alone (and fuses under torch.compile).
_CPU_ONLY = {"gelu_tanh": gelu_tanh}


def _cuda_support(op: str):
    return cuda_ln_unsupported if op.startswith("layernorm") else cuda_unsupported


# The ``cpu`` and ``cuda`` backends: empty where the extension is not built (with CUDA).
_ON_CPU = {**_FUNCTIONS, **_CPU_ONLY}
CPU_OPS = {op: Implementation(fn, cpu_unsupported) for op, fn in _ON_CPU.items()} if available() else {}
CUDA_OPS = {op: Implementation(fn, _cuda_support(op)) for op, fn in _FUNCTIONS.items()} if has_cuda() else {}
# Why a table above is empty, for dispatch's warning when the backend is asked for by name.
EMPTY_BECAUSE = {
    "CPU_OPS": import_error,
    "CUDA_OPS": import_error or "mfkernels._C is built without its CUDA kernels",
}
