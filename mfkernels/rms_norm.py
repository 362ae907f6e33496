"""Deprecated module path: the op is ``mfkernels.rms_norm_jvp`` (``mfkernels/ops.py``), its
Triton kernel is in ``mfkernels/backends/triton/rms_norm.py``."""

import warnings

from .backends.triton.rms_norm import rms_norm_jvp_triton
from .ops import rms_norm_jvp

warnings.warn(
    "mfkernels.rms_norm is deprecated: use mfkernels.rms_norm_jvp, or "
    "mfkernels.backends.triton.rms_norm for the kernel",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["rms_norm_jvp", "rms_norm_jvp_triton"]
