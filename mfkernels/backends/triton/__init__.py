"""The ``triton`` backend: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.

One module per op family (``layernorm_modulate``, ``gated_residual``, ``rms_norm``,
``pointwise``, ``attention``), each with its kernels, their launchers (the signatures of
``mfkernels.reference``) and the support checks that make the dispatch fall back.
"""

from .. import Implementation
from . import attention, gated_residual, layernorm_modulate, pointwise, rms_norm

OPS = {
    "layernorm_modulate_jvp": Implementation(
        layernorm_modulate.layernorm_modulate_jvp_triton, layernorm_modulate.jvp_unsupported
    ),
    "layernorm_modulate_backward": Implementation(
        layernorm_modulate.layernorm_modulate_backward_triton, layernorm_modulate.backward_unsupported
    ),
    "gated_residual_jvp": Implementation(
        gated_residual.gated_residual_jvp_triton, gated_residual.unsupported
    ),
    "gated_residual_backward": Implementation(
        gated_residual.gated_residual_backward_triton, gated_residual.backward_unsupported
    ),
    "rms_norm_jvp": Implementation(rms_norm.rms_norm_jvp_triton, rms_norm.unsupported),
    "gelu_tanh_jvp": Implementation(pointwise.gelu_tanh_jvp_triton, pointwise.gelu_tanh_jvp_unsupported),
    "gelu_tanh_backward": Implementation(
        pointwise.gelu_tanh_backward_triton, pointwise.gelu_tanh_backward_unsupported
    ),
    "silu_jvp": Implementation(pointwise.silu_jvp_triton, pointwise.silu_jvp_unsupported),
    "attention_jvp": Implementation(attention.attention_jvp_triton, attention.jvp_unsupported),
    "attention_backward": Implementation(attention.attention_backward_triton, attention.backward_unsupported),
}
