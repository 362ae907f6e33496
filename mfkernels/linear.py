"""Linear layer, value and tangent: ``y = x W^T + b``, ``y' = x' W^T`` (docs/design.md section 2).

Linear layers stay cuBLAS GEMMs: no kernel of ours beats them. The tangent GEMM runs
outside autograd (the MeanFlow target is stop-gradient), so the backward is exactly the
primal one and no tangent activation is kept alive for it. The value and tangent are two
GEMMs sharing ``W``: the FLOPs of one GEMM on the stacked rows ``[x; x']`` without copying
both halves into a stacked buffer.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_pair, check_same_device, check_same_dtype, check_tensor


def linear_jvp(x, x_dot, weight, bias=None) -> tuple[Tensor, Tensor]:
    """``x``, ``x_dot``: ``(..., in_features)``; ``weight``: ``(out_features, in_features)``;
    ``bias``: ``(out_features,)`` or None; all of one dtype (unless autocast is on) and device."""
    check_pair("x", x, x_dot)
    check_tensor("weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"weight must be (out_features, in_features), got shape {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"x has shape {tuple(x.shape)} but weight expects {weight.shape[-1]} features")
    if bias is not None:
        check_tensor("bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if not torch.is_autocast_enabled(x.device.type):  # autocast casts them to one dtype itself
        check_same_dtype(x=x, weight=weight, bias=bias)
    check_same_device(x=x, weight=weight, bias=bias)
    y = F.linear(x, weight, bias)
    with torch.no_grad():
        y_dot = F.linear(x_dot, weight)
    return y, y_dot
