"""Every Triton kernel compiles for sm_90 and sm_80 on this machine (no GPU needed), as CI
compiles the CUDA sources with nvcc: a kernel that does not build for Hopper or Ampere never
lands. The bf16 kernels at the DiT's head dims must also fit without register spills (a few
bytes on the A100) and load their tiles asynchronously (head dim 72 did neither before the
kernels learned their strides' alignment). fp32 attention, which spills at any tile size,
must spill little."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mfkernels.backends.triton.triton_compat import HAS_TRITON

ROOT = Path(__file__).resolve().parents[2]


def _compile(tmp_path, arch, *options, **env_vars):
    """The rows of ``triton_static.py --arch ARCH OPTIONS``, which must succeed."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MFK_AUTOTUNE")}
    env.update(env_vars, TRITON_CACHE_DIR=str(tmp_path / "cache"))
    script = str(ROOT / "benchmarks" / "triton_static.py")
    cmd = [sys.executable, script, "--arch", str(arch), "--out-dir", str(tmp_path), *options]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / f"triton_static_sm{arch}.json").read_text())["rows"]


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package")
@pytest.mark.parametrize("arch, stack_limit", [(90, 0), (80, 64)])
def test_kernels_compile_without_spills(tmp_path, arch, stack_limit):
    # The A100 lists were chosen with triton 3.8, where no tile spills; the triton 3.6 of
    # torch 2.11 spills 8-40 bytes in four of them. Hopper spills nothing with either.
    rows = _compile(tmp_path, arch, "--quick")
    ops = {r["op"] for r in rows}
    expected = {"attention_jvp", "attention_backward", "layernorm_modulate_jvp", "gated_residual_jvp"}
    variants = {"attention_jvp_tma", "attention_backward_atomic_dq"}  # chosen by environment
    causal = {"attention_jvp_causal", "attention_backward_causal"}
    masked = {"attention_backward_gqa", "attention_jvp_bias", "attention_backward_bias"}
    masked |= {"attention_jvp_bias_full", "attention_backward_bias_full"}
    assert expected | variants | causal | masked | {"gated_residual_backward"} <= ops
    assert {r["shape"] for r in rows if r["op"] == "attention_jvp"} == {"d=64", "d=72"}
    # Tensor descriptors only on Hopper: on the A100 the TMA variant is the pointer kernel.
    assert {r["config"]["TMA"] for r in rows if r["op"] == "attention_jvp_tma"} == {arch >= 90}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["shared_bytes"] <= 163 * 1024, r
        # The atomic-dQ variant is unmeasured and off by default; on the A100 two of the dK/dV
        # tiles it shares with the default spill 168-376 bytes there (docs/attention-tuning.md).
        exempt = arch < 90 and r["op"] == "attention_backward_atomic_dq"
        # A 16-bit bias tile is prefetched through registers (too narrow for cp.async): on the
        # A100 the dK/dV kernel's 64 x 64 (d = 64) and 64 x 32 (d = 72) tiles spill 4-5 KB,
        # d = 72's 32 x 32 ones 264-440 B (docs/attention-tuning.md "Attention bias"). A
        # key-padding mask, read once per key, is held to the same limits as no bias.
        exempt |= arch < 90 and r["op"] == "attention_backward_bias_full"
        # The causal dK/dV kernel's diagonal mask costs the A100's d = 72 64 x 32 tile 72 bytes
        # (16 without it); the grouped-query dK/dV kernel's loop over a group's query heads the
        # same tile 72 bytes and Hopper's d = 72 64 x 64 tile 8.
        limit = stack_limit
        if arch < 90 and r["op"] in ("attention_backward_causal", "attention_backward_gqa"):
            limit = 128
        elif r["op"] == "attention_backward_gqa":
            limit = 8
        elif r["op"] == "attention_jvp_bias_full":  # Hopper's d = 72 128 x 64 forward: 32 bytes
            limit = 32
        if "stack_bytes" in r and not exempt:  # cuobjdump ships with triton's NVIDIA backend
            assert r["registers"] <= 255 and r["stack_bytes"] <= limit, r
    # The attention kernels' K/V (and Q/dO) tiles are pipelined: copied to shared memory
    # asynchronously, not staged through registers.
    for r in rows:
        if r["kernel"] in ("_attn_jvp_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq"):
            assert r["async_copies"] > 0, r


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package")
def test_fp32_attention_spills_little(tmp_path):
    # fp32 dots run on the FMA units with their operands in registers, so these kernels spill
    # at any tile size; the chosen tile keeps it to a few KB a thread (64 x 32 over 4 warps
    # took 20 KB in the d = 128 forward).
    rows = _compile(tmp_path, 90, "--dtypes", "fp32", "--head-dims", "64,128")
    attention = [r for r in rows if r["op"].startswith("attention")]
    assert {r["kernel"] for r in attention} >= {"_attn_jvp_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq"}
    for r in attention:
        assert r["status"] == "ok", r
        if "stack_bytes" in r:
            assert r["stack_bytes"] <= 3 * 1024, r


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package")
def test_autotune_off_compiles_the_first_config_of_each_list(tmp_path):
    from mfkernels.backends.triton.attention import head_dim_parts
    from mfkernels.backends.triton.attention_configs import tuned_for

    rows = _compile(tmp_path, 90, "--quick", MFK_AUTOTUNE="0")
    lists = {"_attn_jvp_fwd": "fwd", "_attn_bwd_dkdv": "dkdv", "_attn_bwd_dq": "dq"}
    compiled = {}
    for r in rows:
        if r["kernel"] in lists:
            c = r["config"]
            compiled.setdefault((r["op"], r["kernel"], r["shape"], c["CAUSAL"]), []).append(
                (c["BLOCK_M"], c["BLOCK_N"], c["num_warps"], c["num_stages"])
            )
    assert {shape for _, _, shape, _ in compiled} == {"d=64", "d=72"}
    for (_, kernel, shape, causal), configs in compiled.items():  # each variant of the op too
        args = {**head_dim_parts(int(shape[2:])), "N_K": 256, "CAUSAL": causal}  # the script's 256 tokens
        assert configs == [tuned_for(lists[kernel], "sm90", args)[0]], (kernel, shape, causal)


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package")
def test_every_tile_fits_a_99_kb_gpu(tmp_path):
    # RTX 30/40/50 cards (sm_86, sm_89, sm_120) give a block 99 KB of shared memory: a tile
    # that needs more fails to launch, and fp32's one tile has nothing to fall back to. The
    # script fails a row over the target's limit; these ops and head dims are where the A100's
    # tiles went over (the d = 128 forward, the atomic-dQ dK/dV kernel, fp32's two stages).
    ops = "attention_jvp,attention_backward,attention_backward_atomic_dq"
    rows = _compile(tmp_path, 86, "--dtypes", "bf16,fp32", "--head-dims", "64,128", "--ops", ops)
    assert {(r["dtype"], r["shape"]) for r in rows} == {
        (t, d) for t in ("bf16", "fp32") for d in ("d=64", "d=128")
    }
    for r in rows:
        assert r["status"] == "ok" and r["shared_bytes"] <= 99 * 1024, r
