"""The kernels' plumbing, checked on the CPU where it is a function of its arguments: what the
triton and csrc backends take, what the attention launches are told about their inputs
(alignment, dot precision, tensor-descriptor loads), the GPU's chunking of token sums, and the
compile caches' tag."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from numerics import DEVICE, needs_triton

from mfkernels._compile_cache import source_version, tag_compile_caches
from mfkernels.backends import csrc
from mfkernels.backends.triton import attention, launch, triton_compat
from mfkernels.backends.triton.triton_compat import vector_alignment

needs_ext = pytest.mark.skipif(not csrc.available(), reason="mfkernels._C is not built")


@needs_triton
def test_cpu_tensors_take_the_triton_backend_only_in_the_interpreter(monkeypatch):
    x = torch.zeros(2)
    assert triton_compat.triton_unsupported(x) is None  # TRITON_INTERPRET=1 here
    monkeypatch.setattr(triton_compat, "INTERPRET", False)
    assert "needs CUDA tensors" in triton_compat.triton_unsupported(x)


@pytest.mark.parametrize(
    "element_size, extents, align",
    [
        (4, (72, 144), 4),
        (2, (72, 1152), 8),
        (2, (17, 64), 1),
        (4, (2, 64), 2),
        (1, (48,), 16),
        (8, (64,), 2),
        (2, (64, 72, 36), 4),  # the last extent decides: every extent counts
    ],
)
def test_vector_alignment_is_counted_in_elements_of_16_bytes(element_size, extents, align):
    assert vector_alignment(element_size, *extents) == align


@needs_triton
def test_every_tensor_of_a_row_kernel_is_checked():
    x, scale = torch.zeros(2, 8), torch.zeros(2, 8, dtype=torch.float64)
    assert "float64 for scale" in launch.unsupported(("x", x), ("scale", scale))


def test_gpu_token_chunks_are_whole_steps_of_every_row_tile(monkeypatch):
    """A chunk the GPU's tuner cuts must hold whole tiles of any ``ROWS`` it may pick, and the
    chunks together every token."""
    monkeypatch.setattr(launch, "sm_count", lambda device: 132)
    for tokens in (1, 17, 256, 1000):
        for batch in (1, 7, 64):
            per_chunk = launch.tokens_per_chunk(tokens, batch, 1152, torch.device("cuda"))
            assert all(per_chunk % rows == 0 for rows in launch.TUNER_ROWS), (tokens, batch, per_chunk)
            assert per_chunk >= 1


@needs_ext
def test_the_cpu_backend_takes_cpu_tensors_of_its_dtypes_only():
    x, elsewhere = torch.zeros(2), torch.empty(2, device="meta")
    assert "needs CPU tensors" in csrc.cpu_unsupported(elsewhere)
    assert "needs CPU tensors" in csrc.cpu_unsupported(x, elsewhere)
    assert "complex64" in csrc.cpu_unsupported(x, torch.zeros(2, dtype=torch.complex64))
    assert "needs CUDA tensors" in csrc.cuda_unsupported(x)


# An extension built without nvcc, stood in for by a module of its version alone.
_BUILD_WITHOUT_CUDA = r"""
import json, sys, types
stub = types.ModuleType("mfkernels._C")
stub.API_VERSION, stub.WITH_CUDA = int(sys.argv[1]), False
sys.modules["mfkernels._C"] = stub
from mfkernels.backends import csrc
print(json.dumps({"cpu": sorted(csrc.CPU_OPS), "cuda": sorted(csrc.CUDA_OPS), "why": csrc.EMPTY_BECAUSE}))
"""


def test_a_build_without_cuda_has_no_cuda_backend_and_says_why():
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", _BUILD_WITHOUT_CUDA, str(csrc.API_VERSION)]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    tables = json.loads(run.stdout.strip().splitlines()[-1])
    assert tables["cpu"] and tables["cuda"] == []
    assert tables["why"]["CPU_OPS"] is None
    assert "built without its CUDA kernels" in tables["why"]["CUDA_OPS"]


def test_a_users_own_compile_cache_tag_is_kept(monkeypatch):
    monkeypatch.setattr(torch.compiler.config, "cache_key_tag", "mine")
    tag_compile_caches()
    tag_compile_caches()
    assert torch.compiler.config.cache_key_tag == f"mine+mfkernels-{source_version()}"


class RecordedLaunch:
    """Stands in for ``kernel[grid](...)``: records the grid and the keyword arguments."""

    def __init__(self, name, seen):
        self.name, self.seen = name, seen

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.seen[self.name] = (grid({"BLOCK_M": 64, "BLOCK_N": 64}) if callable(grid) else grid, kwargs)

        return launch


def recorded_launches(monkeypatch, q, k, v):
    """Every attention kernel's grid and keyword arguments for a forward and a backward
    (the forward's tangents V's: shaped as K, strided as V)."""
    seen = {}
    for name in ("_attn_jvp_fwd", "_attn_bwd_delta_kernel", "_attn_bwd_dkdv", "_attn_bwd_dq"):
        monkeypatch.setattr(attention, name, RecordedLaunch(name, seen))
    o, _, lse = attention.attention_jvp_triton(q, k, v, q, v, v, 0.25)  # K itself alone: tangents of V
    attention.attention_backward_triton(o, q, k, v, o, lse, 0.25)
    return seen


@needs_triton
def test_attention_launches_are_told_their_dots_and_alignment(monkeypatch):
    """fp32 takes IEEE dots; ALIGN divides every tensor's batch, head and row strides (a K cut
    from rows of 17, rows of 17 in every tensor); the delta kernel's grid covers its 64-row blocks."""
    for dtype, prec, align in ((torch.float32, "ieee", 4), (torch.bfloat16, "tf32", 8)):
        q = torch.zeros(1, 2, 65, 16, dtype=dtype)
        seen = recorded_launches(monkeypatch, q, q, q)
        assert seen["_attn_bwd_delta_kernel"][0] == (2, 2, 1)
        for name in ("_attn_jvp_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq"):
            assert seen[name][1]["PREC"] == prec and seen[name][1]["ALIGN"] == align, name
    q, k_of_17 = torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 17)[..., :16]
    seen = recorded_launches(monkeypatch, q, k_of_17, q)
    assert all(seen[name][1]["ALIGN"] == 1 for name in ("_attn_jvp_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq"))
    rows_of_17 = torch.zeros(1, 1, 4, 17)[..., :16]  # batch and head strides of 68 elements
    seen = recorded_launches(monkeypatch, rows_of_17, rows_of_17, rows_of_17)
    assert seen["_attn_jvp_fwd"][1]["ALIGN"] == 1


@needs_triton
def test_tma_loads_only_on_hopper_and_for_views_tma_can_address(monkeypatch):
    monkeypatch.setenv(attention.LOADS_ENV_VAR, "tma")
    k = torch.zeros(2, 2, 8, 16, device=DEVICE)
    assert attention.kv_by_tma(k, k, k, k)
    off_start = torch.zeros(2 * 2 * 8 * 16 + 1, device=DEVICE)[1:].view(2, 2, 8, 16)
    off_batch = torch.zeros(2 * 257, device=DEVICE).as_strided((2, 2, 8, 16), (257, 128, 16, 1))
    for view in (off_start, off_batch):
        assert not attention.kv_by_tma(view, k, k, k)
    monkeypatch.setattr(attention, "INTERPRET", False)
    for arch, tma in ((80, False), (89, False), (90, True)):
        monkeypatch.setattr(attention, "_arch", lambda t, arch=arch: arch)
        assert attention.kv_by_tma(k, k, k, k) is tma, arch


@needs_triton
def test_the_backward_reads_an_lse_of_any_strides():
    q, k, v, grad_o = (torch.randn(1, 2, 5, 16, device=DEVICE) for _ in range(4))
    o, _, lse = attention.attention_jvp_triton(q, k, v, q, k, v, 0.25)
    other_strides = lse.transpose(1, 2).contiguous().transpose(1, 2)
    ours = attention.attention_backward_triton(grad_o, q, k, v, o, lse, 0.25)
    strided = attention.attention_backward_triton(grad_o, q, k, v, o, other_strides, 0.25)
    assert all(torch.equal(a, b) for a, b in zip(ours, strided))


@needs_triton
def test_a_16_bit_attention_runs_in_the_interpreter():
    """The interpreter's single config: a bf16 launch on the CPU never asks for a GPU driver."""
    q = torch.randn(1, 1, 3, 16, device=DEVICE).to(torch.bfloat16)
    o, _, _ = attention.attention_jvp_triton(q, q, q, q, q, q, 0.25)
    expected = torch.softmax(q.float() @ q.float().mT * 0.25, dim=-1) @ q.float()
    torch.testing.assert_close(o.float(), expected, atol=3e-2, rtol=3e-2)
