"""Dual (value, tangent) ops for MeanFlow training: each maps primal inputs and their
tangents to ``(value, tangent)`` in one pass, with a primal-only backward.

A call goes straight down: the public op (``ops.py``: checks, the ``torch.library`` custom
op, its fake and autograd; plain eager calls skip the dispatcher, ``dual_op.py``) ->
``dispatch.py`` (backend choice and fallback) -> one backend's function. Backends
(``backends/``): ``reference`` (``torch_ops.py``, torch's fused kernels, any device),
``triton`` (``backends/triton/``), ``cpu`` and ``cuda`` (``csrc.py``, the C++/CUDA extension
``mfkernels._C`` built from ``csrc/``). ``reference.py`` is the float64 oracle every backend
is tested against (docs/design.md sections 2-4). ``gelu_tanh`` (``primal.py``) is the one
value-only op: a plain forward's bias + GELU on the CPU kernel.

Where each op's kernels, oracle and tests live: the table in docs/design.md section 4.
"""

from . import reference
from ._compile_cache import tag_compile_caches
from .dispatch import BACKENDS, available_backends
from .embedding import timestep_embedding, timestep_embedding_jvp
from .linear import linear_jvp
from .ops import (
    attention_jvp,
    gated_residual_jvp,
    gelu_tanh_jvp,
    layernorm_modulate,
    layernorm_modulate_jvp,
    rms_norm_jvp,
    silu_jvp,
)
from .primal import gelu_tanh
from .sdpa import flash_sdpa, patch_sdpa, sdpa_forward_ad

tag_compile_caches()

__all__ = [
    "BACKENDS",
    "attention_jvp",
    "available_backends",
    "csrc_ops",
    "flash_sdpa",
    "gated_residual_jvp",
    "gelu_tanh",
    "gelu_tanh_jvp",
    "layernorm_modulate",
    "layernorm_modulate_jvp",
    "linear_jvp",
    "patch_sdpa",
    "reference",
    "rms_norm_jvp",
    "sdpa_forward_ad",
    "silu_jvp",
    "timestep_embedding",
    "timestep_embedding_jvp",
]


def __getattr__(name):
    # ``mfkernels.csrc_ops`` is now ``mfkernels.backends.csrc``; the old name keeps working.
    if name == "csrc_ops":
        import importlib
        import warnings

        warnings.warn(
            "mfkernels.csrc_ops is deprecated: use mfkernels.backends.csrc", DeprecationWarning, stacklevel=2
        )
        return importlib.import_module("mfkernels.backends.csrc")
    raise AttributeError(f"module 'mfkernels' has no attribute {name!r}")
