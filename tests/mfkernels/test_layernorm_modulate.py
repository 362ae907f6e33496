"""Triton LayerNorm + adaLN modulate (value, tangent and primal backward) against the float64
reference, docs/design.md sections 2-3: fp32 <= 1e-5 and bf16 <= 3e-2 relative to the reference's
max abs, per output. Modulation vectors are built as the DiT builds them: chunks of one
``(batch, 6 * dim)`` projection, i.e. row-strided views. Without a GPU the kernels run in the
Triton interpreter, which truncates bf16 casts: 16-bit numerics are checked properly only in
the ``gpu`` tests."""

import pytest
import torch
from numerics import DEVICE, TOL, assert_close, needs_triton, rel_err

import mfkernels
from mfkernels import reference
from mfkernels.backends.triton.launch import MAX_ROW_DIM
from mfkernels.backends.triton.layernorm_modulate import (
    backward_unsupported,
    jvp_unsupported,
    layernorm_modulate_backward_triton,
    layernorm_modulate_jvp_triton,
)
from mfkernels.backends.triton.triton_compat import INTERPRET

EPS = 1e-6


def make_inputs(batch, tokens, dim, x_dtype, mod_dtype, device=DEVICE):
    """x, x_dot contiguous; (shift, scale) and tangents as chunks 0, 1 of a (batch, 6 dim)
    projection, as ``DiTBlock`` makes them (row stride 6 dim). x has a non-zero mean."""
    x = (torch.randn(batch, tokens, dim, device=device) * 2 + 0.5).to(x_dtype)
    x_dot = torch.randn(batch, tokens, dim, device=device).to(x_dtype)
    mod = torch.randn(batch, 6 * dim, device=device).to(mod_dtype)
    mod_dot = torch.randn(batch, 6 * dim, device=device).to(mod_dtype)
    return x, x_dot, mod, mod_dot


def run_public(x, x_dot, mod, mod_dot, grad_m, backend):
    """Public API with autograd: ``(m, m_dot, dx, dmod)``; mod's grad lands in chunks 0, 1."""
    x = x.detach().requires_grad_()
    mod = mod.detach().requires_grad_()
    shift, scale = mod.chunk(6, dim=1)[:2]
    shift_dot, scale_dot = mod_dot.chunk(6, dim=1)[:2]
    m, m_dot = mfkernels.layernorm_modulate_jvp(
        x, x_dot, shift, scale, shift_dot, scale_dot, eps=EPS, backend=backend
    )
    assert not m_dot.requires_grad
    m.backward(grad_m)
    return m.detach(), m_dot, x.grad, mod.grad


def check_public(batch, tokens, dim, x_dtype, mod_dtype):
    """Each output within the tolerance of its own dtype (the reference sees the same
    rounded inputs, so an fp32 output of 16-bit inputs is held to 1e-5)."""
    x, x_dot, mod, mod_dot = make_inputs(batch, tokens, dim, x_dtype, mod_dtype)
    grad_m = torch.randn(batch, tokens, dim, device=DEVICE).to(x_dtype)
    out = run_public(x, x_dot, mod, mod_dot, grad_m, "triton")
    ref = run_public(x.double(), x_dot.double(), mod.double(), mod_dot.double(), grad_m.double(), "reference")
    assert out[0].dtype == x_dtype and out[1].dtype == x_dtype
    assert out[2].dtype == x_dtype and out[3].dtype == mod_dtype
    for name, o, r in zip(("m", "m_dot", "dx", "dmod"), out, ref):
        assert_close(name, o, r, TOL[o.dtype])


# ----------------------------------------------------------- interpreter-sized (CPU) tests


@needs_triton
@pytest.mark.parametrize(
    "batch, tokens, dim", [(1, 1, 72), (3, 17, 72), (1, 130, 384), (3, 17, 1152), (3, 130, 384)]
)
def test_fp32_against_float64(batch, tokens, dim):
    check_public(batch, tokens, dim, torch.float32, torch.float32)


@needs_triton
@pytest.mark.parametrize("batch, tokens, dim", [(3, 17, 1152), (3, 130, 72)])
def test_gpu_tiles(gpu_launch_settings, batch, tokens, dim):
    """One row of 1152 per program (two per backward loop step); 16-row tiles of 72 (32 in
    the backward) with a ragged last tile."""
    check_public(batch, tokens, dim, torch.float32, torch.float32)


def _pruned(kernel, n_arg, tile=2048, **named_args):
    """The ``(ROWS, num_warps)`` tiles the GPU's tuner of ``kernel`` times for these arguments."""
    from mfkernels.backends.triton import launch

    tuner = launch.row_tuner(kernel, n_arg, tile)
    tuner.nargs = named_args
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launch, "INTERPRET", False)  # the GPU's row_settings
        configs = tuner.prune_configs({})
    return [
        (c.kwargs["ROWS"], c.num_warps, *[c.kwargs[k] for k in ("SPLIT",) if k in c.kwargs]) for c in configs
    ]


@needs_triton
def test_the_gpu_tunes_tiles_of_4_to_32_elements_a_thread(monkeypatch):
    """At DiT-XL/2's rows (1152 wide, 64 x 256 of them) the tuner times today's tile first,
    then every other tile that gives a thread 4-32 elements of a row; under MFK_AUTOTUNE=0
    (the GPU test suite) only the first."""
    from mfkernels.backends.triton import layernorm_modulate as ln

    monkeypatch.delenv("MFK_AUTOTUNE", raising=False)
    forward = _pruned(ln._ln_modulate_jvp_fwd_kernel, "n_rows", n_rows=64 * 256, dim=1152)
    assert forward[0] == (1, 8) and len(forward) == len(set(forward)) > 4
    assert all(4 <= rows * 2048 // (32 * warps) <= 32 for rows, warps in forward)
    backward = _pruned(ln._ln_modulate_bwd_kernel, "tokens", 4096, tokens=256, dim=1152, tokens_per_chunk=64)
    assert backward[0] == (2, 8, 1) and {c[:2] for c in backward} == set(forward)
    # the first tile again with its chunks cut in 2, 4 and 8 (parts of 32, 16, 8 tokens)
    assert [c for c in backward if c[2] > 1] == [(2, 8, 2), (2, 8, 4), (2, 8, 8)]
    short = _pruned(ln._ln_modulate_bwd_kernel, "tokens", 4096, tokens=256, dim=72, tokens_per_chunk=64)
    assert short[0] == (32, 8, 1) and [c for c in short if c[2] > 1] == [(32, 8, 2)]  # 16 < 32 rows
    single = _pruned(ln._ln_modulate_jvp_fwd_kernel, "n_rows", n_rows=1, dim=1152)
    assert single == [(1, 8), (1, 2), (1, 4), (1, 16)]
    monkeypatch.setenv("MFK_AUTOTUNE", "0")
    assert _pruned(ln._ln_modulate_jvp_fwd_kernel, "n_rows", n_rows=64 * 256, dim=1152) == [(1, 8)]


@needs_triton
@pytest.mark.parametrize("rows", [1, 2, 4, 8])
def test_every_row_tile_the_gpu_may_take(monkeypatch, rows):
    """Each ``ROWS`` the tuner may pick, run in the interpreter on ragged row counts (the
    chosen tile is row_settings'; the warps do not change the interpreter's arithmetic)."""
    from mfkernels.backends.triton import launch

    block = launch.next_power_of_2
    monkeypatch.setattr(launch, "row_settings", lambda dim, n, tile=2048: (rows, block(dim), 4))
    check_public(3, 13, 72, torch.float32, torch.float32)
    check_public(2, 5, 1152, torch.float32, torch.float32)


@needs_triton
@pytest.mark.parametrize(
    "x_dtype, mod_dtype",
    [
        (torch.float32, torch.bfloat16),  # autocast: fp32 residual stream, bf16 projection
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_mixed_and_low_precision(x_dtype, mod_dtype):
    check_public(3, 17, 72, x_dtype, mod_dtype)


@needs_triton
def test_strided_x_and_separate_vectors():
    """x as a (tokens, batch, dim) buffer seen as (batch, tokens, dim); contiguous vectors."""
    batch, tokens, dim = 3, 17, 72
    x = (torch.randn(tokens, batch, dim, device=DEVICE) + 1).transpose(0, 1)
    x_dot = torch.randn(tokens, batch, dim, device=DEVICE).transpose(0, 1)
    vectors = [torch.randn(batch, dim, device=DEVICE) for _ in range(4)]
    m, m_dot = layernorm_modulate_jvp_triton(x, x_dot, *vectors, EPS)
    ref_m, ref_m_dot = reference.layernorm_modulate_jvp(
        x.double(), x_dot.double(), *(v.double() for v in vectors), EPS
    )
    assert_close("m", m, ref_m, 1e-5)
    assert_close("m_dot", m_dot, ref_m_dot, 1e-5)
    # A column-strided x (last dim not unit stride) is copied, not misread.
    xt = torch.randn(batch, dim, tokens, device=DEVICE).transpose(1, 2)
    m, _ = layernorm_modulate_jvp_triton(xt, xt, *vectors, EPS)
    assert_close(
        "m (column-strided x)",
        m,
        reference.layernorm_modulate_jvp(xt.double(), xt.double(), *(v.double() for v in vectors), EPS)[0],
        1e-5,
    )


@needs_triton
@pytest.mark.parametrize("tokens_per_chunk", [1, 3, 16, 200])
def test_backward_two_stage_sums(tokens_per_chunk):
    """dshift and dscale are per-chunk partial sums reduced afterwards: any chunking agrees."""
    batch, tokens, dim = 2, 37, 72
    x, _, mod, _ = make_inputs(batch, tokens, dim, torch.float32, torch.float32)
    scale = mod.chunk(6, dim=1)[1]
    grad_m = torch.randn(batch, tokens, dim, device=DEVICE)
    out = layernorm_modulate_backward_triton(grad_m, x, scale, EPS, tokens_per_chunk=tokens_per_chunk)
    ref = reference.layernorm_modulate_backward(grad_m.double(), x.double(), scale.double(), EPS)
    for name, o, r in zip(("dx", "dshift", "dscale"), out, ref):
        assert_close(name, o, r, 1e-5)


@needs_triton
@pytest.mark.parametrize("split", [2, 4, 8])
@pytest.mark.parametrize("tokens_per_chunk", [3, 16, 37])
def test_backward_chunks_cut_by_the_tuned_split(monkeypatch, split, tokens_per_chunk):
    """A tile whose ``SPLIT`` cuts each chunk in parts (the GPU's tuner may take one), taken
    through a triton autotuner as on the GPU: every token summed once, however the parts fall
    (ragged, or more parts than tokens)."""
    from mfkernels.backends.triton import launch
    from mfkernels.backends.triton import layernorm_modulate as ln
    from mfkernels.backends.triton.triton_compat import triton

    tile = triton.Config({"ROWS": 2, "SPLIT": split}, num_warps=4)
    tuner = triton.autotune([tile], key=["tokens", "dim"])(ln._ln_modulate_bwd_kernel)
    monkeypatch.setattr(ln, "_ln_modulate_bwd", tuner)
    batch, tokens, dim = 2, 37, 72
    x, _, mod, _ = make_inputs(batch, tokens, dim, torch.float32, torch.float32)
    scale = mod.chunk(6, dim=1)[1]
    grad_m = torch.randn(batch, tokens, dim, device=DEVICE)
    out = layernorm_modulate_backward_triton(grad_m, x, scale, EPS, tokens_per_chunk=tokens_per_chunk)
    assert launch.chosen_split(tuner) == split
    ref = reference.layernorm_modulate_backward(grad_m.double(), x.double(), scale.double(), EPS)
    for name, o, r in zip(("dx", "dshift", "dscale"), out, ref):
        assert_close(name, o, r, 1e-5)


@needs_triton
def test_deterministic_backward():
    x, _, mod, _ = make_inputs(2, 17, 72, torch.float32, torch.float32)
    grad_m = torch.randn_like(x)
    first = layernorm_modulate_backward_triton(grad_m, x, mod[:, :72], EPS)
    second = layernorm_modulate_backward_triton(grad_m, x, mod[:, :72], EPS)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@needs_triton
def test_unsupported_reasons():
    x = torch.randn(1, 2, MAX_ROW_DIM + 1, device=DEVICE)
    v = torch.randn(1, MAX_ROW_DIM + 1, device=DEVICE)
    assert "dim" in jvp_unsupported(x, x, v, v, v, v, EPS)
    assert "dim" in backward_unsupported(x, x, v, EPS)
    x, v = torch.randn(1, 2, 8, device=DEVICE), torch.randn(1, 8, device=DEVICE)
    assert jvp_unsupported(x, x, v, v, v, v, EPS) is None
    assert "float64 for shift" in jvp_unsupported(x, x, v.double(), v, v, v, EPS)


@needs_triton
def test_fallback_warns_and_matches_reference():
    """A row too wide for the kernel falls back with a warning, no crash: to the reference on
    a GPU (whose automatic backend is triton itself), to the cpu backend where it is built."""
    if DEVICE == "cpu" and not INTERPRET:
        pytest.skip("triton backend needs CUDA or TRITON_INTERPRET=1")
    x = torch.randn(1, 1, MAX_ROW_DIM + 1, device=DEVICE)
    v = torch.randn(1, MAX_ROW_DIM + 1, device=DEVICE)
    fallback = "cpu" if DEVICE == "cpu" and "cpu" in mfkernels.available_backends() else "reference"
    with pytest.warns(UserWarning, match=f"at most {MAX_ROW_DIM} elements.*using '{fallback}'"):
        m, _ = mfkernels.layernorm_modulate_jvp(x, x, v, v, v, v, backend="triton")
    assert_close("m", m, reference.layernorm_modulate_jvp(x, x, v, v, v, v)[0], 1e-6)


@needs_triton
def test_opcheck():
    x, x_dot, mod, mod_dot = make_inputs(2, 3, 8, torch.float32, torch.float32)
    x.requires_grad_()
    shift, scale = (t.detach().clone().requires_grad_() for t in mod.chunk(6, dim=1)[:2])
    args = (x, x_dot, shift, scale, *mod_dot.chunk(6, dim=1)[:2], EPS, "triton")
    torch.library.opcheck(torch.ops.mfkernels.layernorm_modulate_jvp.default, args)
    grad_m = torch.randn(2, 3, 8, device=DEVICE)
    torch.library.opcheck(
        torch.ops.mfkernels.layernorm_modulate_backward.default,
        (grad_m, x.detach(), scale.detach(), EPS, "triton"),
    )


# ---------------------------------------------------------------------- GPU (DiT-XL sizes)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "x_dtype, mod_dtype",
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.bfloat16),
        (torch.float16, torch.float16),
    ],
)
@pytest.mark.parametrize("batch, tokens, dim", [(8, 256, 1152), (3, 130, 72), (2, 1, 1152)])
def test_gpu_against_float64(batch, tokens, dim, x_dtype, mod_dtype):
    check_public(batch, tokens, dim, x_dtype, mod_dtype)


@pytest.mark.gpu
def test_gpu_bf16_error_within_twice_torch():
    """flash-attention's rule: our bf16 error vs float64 is at most 2x that of the same math
    done by torch in bf16 (plus a small floor for outputs torch happens to get exact)."""
    x, x_dot, mod, mod_dot = make_inputs(8, 256, 1152, torch.bfloat16, torch.bfloat16)
    shift, scale = mod.chunk(6, dim=1)[:2]
    shift_dot, scale_dot = mod_dot.chunk(6, dim=1)[:2]
    args = (x, x_dot, shift, scale, shift_dot, scale_dot)
    ours = layernorm_modulate_jvp_triton(*args, EPS)
    ref = reference.layernorm_modulate_jvp(*(t.double() for t in args), EPS)
    # Torch in bf16: layer_norm on bf16 (fp32 internally), modulation and tangent in bf16.
    a = torch.nn.functional.layer_norm(x, (1152,), eps=EPS)
    s = torch.rsqrt(x.float().var(-1, unbiased=False, keepdim=True) + EPS).to(x.dtype)
    a_dot = (x_dot - x_dot.mean(-1, keepdim=True) - a * (a * x_dot).mean(-1, keepdim=True)) * s
    torch_m = a * (1 + scale[:, None]) + shift[:, None]
    torch_m_dot = a_dot * (1 + scale[:, None]) + a * scale_dot[:, None] + shift_dot[:, None]
    for name, o, t, r in zip(("m", "m_dot"), ours, (torch_m, torch_m_dot), ref):
        assert rel_err(o, r) <= 2 * rel_err(t, r) + 1e-3, name


F32, BF16 = torch.float32, torch.bfloat16


@pytest.mark.parametrize("backend", sorted(mfkernels.available_backends(DEVICE)))
@pytest.mark.parametrize("shift_dtype, scale_dtype", [(F32, BF16), (BF16, F32)], ids=["f32-bf16", "bf16-f32"])
def test_shift_and_scale_of_two_dtypes_each_get_a_gradient_of_their_own(backend, shift_dtype, scale_dtype):
    """Both gradients used to be cast to scale's dtype: an fp32 shift beside a bf16 scale got
    its gradient rounded to bf16 (2e-3 off) before autograd cast it back."""
    x, _, mod, _ = make_inputs(2, 5, 16, torch.float32, torch.float32)
    grad_m = torch.randn(x.shape, device=DEVICE)
    shift = mod[:, :16].to(shift_dtype).requires_grad_()
    scale = mod[:, 16:32].to(scale_dtype).requires_grad_()
    vectors = (shift, scale, shift.detach(), scale.detach())
    m, _ = mfkernels.layernorm_modulate_jvp(x, x, *vectors, backend=backend)
    m.backward(grad_m)
    ref = reference.layernorm_modulate_backward(grad_m.double(), x.double(), scale.double())
    assert shift.grad.dtype == shift_dtype and scale.grad.dtype == scale_dtype
    assert_close("dshift", shift.grad, ref[1], TOL[shift_dtype])
    assert_close("dscale", scale.grad, ref[2], TOL[scale_dtype])
