"""One-off diagnosis (2026-12-04, H200, torch 2.11): what broke ``torch.func.jvp`` in bf16. The
backward of a MeanFlow loss through SDPA's math backend under CUDA bf16 autocast, with and
without bf16 reductions allowed, and SDPA alone. It found the failure in SDPA's safe softmax
that ``meanflow.models.unfused_attention`` now works around (the benchmarks' torch.func
variants run attention in plain ops).

    python benchmarks/scripts/func_jvp_sdpa_math_bf16.py     # needs a GPU

Its output: ``benchmarks/results/nvidia-h200-20261204/func_jvp_sdpa_math_bf16.log``.
"""

import sys
import traceback
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout, uninstalled
from meanflow.loss import MeanFlowLoss, func_jvp  # noqa: E402
from meanflow.models import DiT, DiTConfig  # noqa: E402

torch.manual_seed(0)
config = DiTConfig(
    input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10
)
model = DiT(config).cuda()
loss_fn = MeanFlowLoss(class_dropout=0.0, jvp=func_jvp)
x, y = torch.randn(4, 4, 8, 8, device="cuda"), torch.randint(0, 10, (4,), device="cuda")


def attempt(label, reduction=None, anomaly=False):
    if reduction is not None:
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(reduction)
    try:
        with torch.autograd.set_detect_anomaly(anomaly), sdpa_kernel(SDPBackend.MATH):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_fn(model, x, y)[0]
            loss.backward()
        print(label, "OK", loss.item(), flush=True)
    except Exception:
        print(label, "FAILED", flush=True)
        traceback.print_exc()


print("default math reduction flag:", torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed())
attempt("plain")
attempt("anomaly", anomaly=True)
attempt("reduction_allowed", reduction=True)
torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(False)

q = torch.randn(2, 4, 16, 16, device="cuda", requires_grad=True)
try:
    with sdpa_kernel(SDPBackend.MATH), torch.autocast("cuda", dtype=torch.bfloat16):
        attention = lambda a: torch.nn.functional.scaled_dot_product_attention(a, a, a)  # noqa: E731
        o, o_dot = torch.func.jvp(attention, (q,), (torch.randn_like(q),))
    o.float().sum().backward()
    print("sdpa jvp+backward OK", o.dtype, o_dot.dtype)
except Exception:
    print("sdpa jvp+backward FAILED")
    traceback.print_exc()
