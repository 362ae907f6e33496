"""Deprecated module path: the op is ``mfkernels.gated_residual_jvp`` (``mfkernels/ops.py``),
its Triton kernel is in ``mfkernels/backends/triton/gated_residual.py``."""

import warnings

from .backends.triton.gated_residual import gated_residual_jvp_triton
from .ops import gated_residual_jvp

warnings.warn(
    "mfkernels.residual is deprecated: use mfkernels.gated_residual_jvp, or "
    "mfkernels.backends.triton.gated_residual for the kernel",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["gated_residual_jvp", "gated_residual_jvp_triton"]
