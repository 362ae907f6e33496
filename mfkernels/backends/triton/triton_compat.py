"""Triton import point for the kernel files.

``mfkernels`` must import on machines without Triton (CPU-only torch builds): then
``triton.jit`` and friends become no-op decorators, kernels are defined but never launched,
and the dispatch reports the ``triton`` backend as unavailable.

``INTERPRET`` is true under ``TRITON_INTERPRET=1`` (CPU tests). The interpreter computes
``tl.dot`` on bf16/fp16 wrongly and truncates bf16 casts, so kernels route every dot
through :func:`dot`, which upcasts its operands to fp32 only when interpreting.
"""

import contextlib
import math
import os

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on machines without Triton
    HAS_TRITON = False

    class _NoTriton:
        """Stands in for ``triton`` and ``triton.language`` so kernel files still import."""

        # An annotation in kernel signatures, and the wrapper of kernel-level constants.
        constexpr = staticmethod(lambda value=None: value)

        def jit(self, fn=None, **kwargs):
            return fn if fn is not None else (lambda f: f)

        def autotune(self, *args, **kwargs):
            return lambda f: f

        heuristics = autotune

        def Config(self, *args, **kwargs):
            return None

        def __getattr__(self, name):
            return self

    triton = tl = _NoTriton()

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def autotune_enabled() -> bool:
    """False under ``MFK_AUTOTUNE=0``: each autotuned kernel runs its first config, untimed
    (read at each launch; the test suite sets it on a GPU)."""
    return os.environ.get("MFK_AUTOTUNE", "1") != "0"


if HAS_TRITON:
    _INTERPRET = tl.constexpr(INTERPRET)

    @triton.jit
    def dot(a, b, acc, input_precision: tl.constexpr = None):
        """``acc + a @ b`` with fp32 accumulation; fp32 operands under the interpreter.

        ``input_precision`` is passed to ``tl.dot``: kernels give ``"ieee"`` for fp32
        inputs, since the GPU default (tf32) misses the fp32 tolerance of docs/design.md section 3.
        """
        if _INTERPRET:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=input_precision)
        return tl.dot(a, b, acc, input_precision=input_precision)

    @triton.jit
    def wide_mul(index, stride, WIDE: tl.constexpr = True):
        """``index * stride``, in int64 unless ``WIDE`` is false: an element offset formed from a
        program id, a loop position or a row index (int32) and a stride, which may pass
        2**31 - 1 when each factor fits in int32 (Triton passes integer arguments below 2**31
        as int32 and multiplies in int32, wrapping silently). A launcher that knows every such
        product fits passes ``WIDE=False`` for the offsets inside a kernel's loops, where int64
        scalars cost registers (attention at 255 would spill)."""
        if WIDE:  # one return: a kernel's returns must agree in type, constexpr branches too
            index = tl.cast(index, tl.int64)
        return index * stride

else:  # pragma: no cover
    dot = wide_mul = None


def triton_unsupported(*tensors) -> str | None:
    """Why the triton backend cannot take these tensors, or None when it can."""
    if not HAS_TRITON:
        return "needs the triton package"
    device = tensors[0].device
    if device.type != "cuda" and not (device.type == "cpu" and INTERPRET):
        return f"needs CUDA tensors (or TRITON_INTERPRET=1 on the CPU), got {device.type}"
    if tensors[0].dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"does not support {tensors[0].dtype}"
    return None


def device_guard(t: torch.Tensor):
    """The device ``t`` lives on made current for the block: Triton launches a kernel on the
    current CUDA device and its current stream, not on its tensors' device, so a kernel on
    ``cuda:1`` tensors launched while ``cuda:0`` is current would run on the wrong GPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def vector_alignment(element_size: int, *extents: int) -> int:
    """The largest power of two, up to one 16-byte vector of elements, dividing every extent
    (strides, row lengths): a kernel's ``ALIGN``. Triton infers alignment only from
    arguments divisible by 16, so a head dim of 72 needs telling that its rows are
    16-byte aligned before its loads can be vectorised or made asynchronous."""
    return math.gcd(16 // element_size, *extents)
