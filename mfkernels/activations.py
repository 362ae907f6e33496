"""Deprecated module path: the ops are ``mfkernels.gelu_tanh_jvp`` and ``mfkernels.silu_jvp``
(``mfkernels/ops.py``), their Triton kernels are in ``mfkernels/backends/triton/pointwise.py``."""

import warnings

from .backends.triton.pointwise import gelu_tanh_backward_triton, gelu_tanh_jvp_triton, silu_jvp_triton
from .ops import gelu_tanh_jvp, silu_jvp

warnings.warn(
    "mfkernels.activations is deprecated: use mfkernels.gelu_tanh_jvp and mfkernels.silu_jvp, or "
    "mfkernels.backends.triton.pointwise for the kernels",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "gelu_tanh_backward_triton",
    "gelu_tanh_jvp",
    "gelu_tanh_jvp_triton",
    "silu_jvp",
    "silu_jvp_triton",
]
