"""Dual (value, tangent) ops for MeanFlow training: each maps primal inputs and their
tangents to ``(value, tangent)`` in one pass, with a primal-only backward.

Backends behind one dispatch (``dispatch.py``): ``reference`` (plain torch, the oracle),
``triton``, ``cuda`` and ``cpu`` (the csrc extension). Every kernel-backed op is a
``torch.library`` custom op, so ``torch.compile(fullgraph=True)`` traces through it; plain
eager calls skip the dispatcher (``_autograd.DualOp``).
"""

from . import csrc_ops, reference  # csrc_ops: the cpu/cuda backends, where mfkernels._C is built
from ._compile_cache import tag_compile_caches
from .activations import gelu_tanh_jvp, silu_jvp
from .attention import attention_jvp
from .dispatch import BACKENDS, available_backends
from .embedding import timestep_embedding, timestep_embedding_jvp
from .layernorm_modulate import layernorm_modulate, layernorm_modulate_jvp
from .linear import linear_jvp
from .residual import gated_residual_jvp
from .rms_norm import rms_norm_jvp
from .sdpa import flash_sdpa, patch_sdpa, sdpa_forward_ad

tag_compile_caches()

__all__ = [
    "BACKENDS",
    "attention_jvp",
    "available_backends",
    "csrc_ops",
    "flash_sdpa",
    "gated_residual_jvp",
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
