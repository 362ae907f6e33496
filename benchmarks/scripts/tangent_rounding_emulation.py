"""How close to float64 can the attention JVP's O' be in bf16/fp16? The Triton forward's
arithmetic emulated on the CPU with real 16-bit rounding, on the inputs of
``test_gpu_tangent_error_at_every_magnitude`` (q, k, v and tangents of standard deviation 1-30).

    python benchmarks/scripts/tangent_rounding_emulation.py

Emulated as the kernel does it (mfkernels/backends/triton/attention_kernels.py): scores from
16-bit inputs in fp32, the online softmax over 64-key tiles, P and P * S' rounded to the input
dtype before their products with V, V' (fp32 sums), acc_ps summing the same rounded P * S',
O' = acc_t / l - (acc_ps / l) O in fp32, then rounded to the input dtype. Errors are relative to
max |O'| of the float64 reference of the same rounded inputs, over the outputs the dtype can
represent. Columns: "O' stored" (what the kernel returns), "before storing" (the fp32 O'),
"storing alone" (the exact O' rounded to the dtype: the floor no kernel storing 16 bits beats).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from mfkernels import reference

LOG2E = 1.4426950408889634


def emulated_o_dot(q, k, v, q_dot, k_dot, v_dot, scale, dtype, block_n=64):
    """The kernel's fp32 O' for one head, ``(N, d)`` fp32 tensors holding ``dtype`` values."""

    def rounded(x):
        return x.to(dtype).float()

    n = q.shape[0]
    m = torch.full((n,), float("-inf"))
    l_sum, acc_ps = torch.zeros(n), torch.zeros(n)
    acc_o, acc_t = torch.zeros_like(q), torch.zeros_like(q)
    for start in range(0, k.shape[0], block_n):
        k_t, kd_t, v_t, vd_t = (t[start : start + block_n] for t in (k, k_dot, v, v_dot))
        s = (q @ k_t.T) * (scale * LOG2E)
        s_dot = (q_dot @ k_t.T + q @ kd_t.T) * scale
        m_new = torch.maximum(m, s.max(1).values)
        alpha = torch.exp2(m - m_new)
        p = torch.exp2(s - m_new[:, None])
        p_lo, ps_lo = rounded(p), rounded(p * s_dot)
        l_sum = l_sum * alpha + p.sum(1)
        acc_ps = acc_ps * alpha + ps_lo.sum(1)
        acc_o = acc_o * alpha[:, None] + p_lo @ v_t
        acc_t = acc_t * alpha[:, None] + p_lo @ vd_t + ps_lo @ v_t
        m = m_new
    o = acc_o / l_sum[:, None]
    return acc_t / l_sum[:, None] - (acc_ps / l_sum)[:, None] * o


def errors(magnitude, n, d, dtype):
    """``(stored, before storing, storing alone)`` errors on the GPU test's inputs."""
    g = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(1, 2, n, d, generator=g) * magnitude).to(dtype) for _ in range(6)]
    _, ref, _ = reference.attention_jvp(*(t.double() for t in inputs), d**-0.5)
    fp32 = torch.stack(
        [emulated_o_dot(*(t[0, h].float() for t in inputs), d**-0.5, dtype) for h in range(2)]
    ).unsqueeze(0)
    representable = ref.abs() < 0.99 * torch.finfo(dtype).max
    ref = ref[representable]
    scale = ref.abs().max()

    def err(out):
        return ((out[representable].double() - ref).abs().max() / scale).item()

    return err(fp32.to(dtype)), err(fp32), ((ref.to(dtype).double() - ref).abs().max() / scale).item()


def main():
    print("dtype     N    d  magnitude  O' stored  before storing  storing alone")
    for dtype in (torch.bfloat16, torch.float16):
        for n in (256, 300):
            for d in (64, 72, 128):
                for magnitude in (1.0, 3.0, 10.0, 30.0):
                    stored, fp32, floor = errors(magnitude, n, d, dtype)
                    name = str(dtype).removeprefix("torch.")
                    print(f"{name:8} {n:4} {d:4} {magnitude:10.0f} {stored:10.2e} {fp32:15.2e} {floor:14.2e}")


if __name__ == "__main__":
    main()
