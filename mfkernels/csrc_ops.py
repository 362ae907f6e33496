"""Deprecated module path: the csrc extension's backends are ``mfkernels/backends/csrc.py``."""

import warnings

from .backends.csrc import (
    _C,
    CUDA_DTYPES,
    DTYPE_CODES,
    available,
    cpu_unsupported,
    cuda_ln_unsupported,
    cuda_unsupported,
    gated_residual_jvp,
    gelu_tanh_backward,
    gelu_tanh_jvp,
    has_cuda,
    import_error,
    layernorm_modulate_backward,
    layernorm_modulate_jvp,
    silu_jvp,
)

warnings.warn(
    "mfkernels.csrc_ops is deprecated: use mfkernels.backends.csrc", DeprecationWarning, stacklevel=2
)

__all__ = [
    "CUDA_DTYPES",
    "DTYPE_CODES",
    "_C",
    "available",
    "cpu_unsupported",
    "cuda_ln_unsupported",
    "cuda_unsupported",
    "gated_residual_jvp",
    "gelu_tanh_backward",
    "gelu_tanh_jvp",
    "has_cuda",
    "import_error",
    "layernorm_modulate_backward",
    "layernorm_modulate_jvp",
    "silu_jvp",
]
