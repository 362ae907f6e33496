"""Deprecated module path: the op is ``mfkernels.attention_jvp`` (``mfkernels/ops.py``), its
Triton kernels are in ``mfkernels/backends/triton/attention*.py``."""

import warnings

from .backends.triton.attention import attention_backward_triton, attention_jvp_triton, head_dim_parts
from .backends.triton.attention import jvp_unsupported as triton_attention_unsupported
from .ops import attention_jvp

warnings.warn(
    "mfkernels.attention is deprecated: use mfkernels.attention_jvp, or "
    "mfkernels.backends.triton.attention for the kernels",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "attention_backward_triton",
    "attention_jvp",
    "attention_jvp_triton",
    "head_dim_parts",
    "triton_attention_unsupported",
]
