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

from ._checks import check_pair


def linear_jvp(x, x_dot, weight, bias=None) -> tuple[Tensor, Tensor]:
    check_pair("x", x, x_dot)
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} features but weight expects {weight.shape[-1]}")
    y = F.linear(x, weight, bias)
    with torch.no_grad():
        y_dot = F.linear(x_dot, weight)
    return y, y_dot
