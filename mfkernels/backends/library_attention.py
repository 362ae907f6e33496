"""The primal attention backward by another library's kernel, from the ``O`` and ``LSE`` our
fused forward saved: cuDNN's or FlashAttention-2's (SDPA's flash backend), both through
torch's own ops (docs/attention-tuning.md, MFK_ATTENTION_BACKWARD).

Both take the LSE as ours is: natural-log ``logsumexp`` of the scaled scores per query row,
float32 ``(batch, heads, N_q)`` (cuDNN with a trailing unit dim), so nothing is recomputed.
On CPU tensors ``flash`` is torch's CPU flash-attention backward, which takes the same LSE.
FlashAttention-2 (and torch's CPU kernel) also takes grouped-query heads as they are, K and V
with fewer heads than Q, summing each group's dK and dV itself; cuDNN is handed equal heads.
"""

import torch
from torch import Tensor

LIBRARIES = ("cudnn", "flash")
_HALF = (torch.float16, torch.bfloat16)


def unsupported(library: str, q: Tensor, k: Tensor, v: Tensor, causal: bool = False, bias=None) -> str | None:
    """Why ``library``'s backward cannot take these inputs here, or None."""
    if bias is not None:
        return "is handed attention without a bias (attn_mask) only"
    if v.shape[-1] != q.shape[-1]:
        return f"needs v's head_dim equal to q's ({q.shape[-1]}), got {v.shape[-1]}"
    if library == "cudnn" and k.shape[1] != q.shape[1]:
        return "is handed as many key/value heads as query heads only (no grouped-query attention)"
    if causal and q.shape[2] != k.shape[2]:
        # Where the lengths differ, a library may align its causal mask at the bottom right
        # (FlashAttention >= 2.1 does); ours is at the top left, as SDPA's.
        return "is handed causal attention only where queries and keys are equally long"
    if not q.is_cuda:
        return None if library == "flash" else f"{library} runs on CUDA tensors only"
    if q.dtype not in _HALF:
        return f"{library} takes float16 and bfloat16 on a GPU, got {q.dtype}"
    if q.shape[-1] % 8 or q.shape[-1] > 128:
        return f"{library} takes head dims that are multiples of 8 up to 128, got {q.shape[-1]}"
    if torch.cuda.get_device_capability(q.device) < (8, 0):
        return f"{library} needs sm_80 or newer"
    if library == "cudnn" and not torch.backends.cudnn.is_available():
        return "this torch has no cuDNN"
    if library == "flash" and not torch.backends.cuda.is_flash_attention_available():
        return "this torch was built without flash attention"
    return None


def _unit_cols(t: Tensor) -> Tensor:
    # Both libraries read rows along a unit-stride head dim; any other strides they take.
    return t if t.stride(-1) == 1 else t.contiguous()


def attention_backward(library: str, grad_o, q, k, v, o, lse, scale, causal=False):
    """``(dQ, dK, dV)`` by ``library`` (one of :data:`LIBRARIES`); inputs as for
    :func:`reference.attention_backward`, where :func:`unsupported` found nothing."""
    grad_o, q, k, v, o = (_unit_cols(t) for t in (grad_o, q, k, v, o))
    lse = lse.to(torch.float32)
    n_q, n_k = q.shape[2], k.shape[2]
    if not q.is_cuda:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_o, q, k, v, o, lse, 0.0, causal, scale=scale
        )
    # Dropout's random state: unused at dropout 0; the dense case has no sequence offsets.
    unused = torch.empty((), dtype=torch.long, device=q.device)
    if library == "cudnn":
        return torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            grad_o, q, k, v, o, lse.unsqueeze(-1), unused, unused, None, None, None, n_q, n_k, 0.0, causal,
            scale=scale,
        )  # fmt: skip
    return torch.ops.aten._scaled_dot_product_flash_attention_backward(
        grad_o, q, k, v, o, lse, None, None, n_q, n_k, 0.0, causal, unused, unused, scale=scale
    )
