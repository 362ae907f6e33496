import traceback, torch
from torch.nn.attention import sdpa_kernel, SDPBackend
from meanflow.models import DiT, DiTConfig
from meanflow.loss import MeanFlowLoss, func_jvp
torch.manual_seed(0)
m = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)).cuda()
loss = MeanFlowLoss(class_dropout=0.0, jvp=func_jvp)
x = torch.randn(4, 4, 8, 8, device="cuda"); y = torch.randint(0, 10, (4,), device="cuda")
def attempt(label, reduction=None, anomaly=False):
    if reduction is not None:
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(reduction)
    try:
        with torch.autograd.set_detect_anomaly(anomaly), sdpa_kernel(SDPBackend.MATH), torch.autocast("cuda", dtype=torch.bfloat16):
            l = loss(m, x, y)[0]
        with torch.autograd.set_detect_anomaly(anomaly):
            l.backward()
        print(label, "OK", l.item(), flush=True)
    except Exception:
        print(label, "FAILED", flush=True); traceback.print_exc()
print("default math reduction flag:", torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed())
attempt("plain")
attempt("anomaly", anomaly=True)
attempt("reduction_allowed", reduction=True)
torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(False)
# softmax jvp alone under autocast
q = torch.randn(2, 4, 16, 16, device="cuda", requires_grad=True)
try:
    with sdpa_kernel(SDPBackend.MATH), torch.autocast("cuda", dtype=torch.bfloat16):
        o, od = torch.func.jvp(lambda a: torch.nn.functional.scaled_dot_product_attention(a, a, a), (q,), (torch.randn_like(q),))
    o.float().sum().backward(); print("sdpa jvp+backward OK", o.dtype, od.dtype)
except Exception:
    print("sdpa jvp+backward FAILED"); traceback.print_exc()
