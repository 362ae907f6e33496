"""The csrc extension's C++ CPU side where test_csrc_ops.py's tolerances cannot see a bug: the
float32 <-> bfloat16/float16 conversions of every ISA build held bit for bit to torch's own
(round to nearest even, NaN, infinity, subnormals, the float16 overflow threshold), rows split
over any number of threads, outputs that accumulate (dshift, dscale, dbias) whatever they held
before, the run-time ISA choice against the CPU's flags, and the bindings' argument checks
that the Python wrapper never trips.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from numerics import assert_close, f64

import mfkernels
from mfkernels import reference
from mfkernels.backends import csrc

_C = csrc._C
ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.skipif(_C is None, reason=str(csrc.import_error)),
    pytest.mark.filterwarnings("error:mfkernels"),  # a silent fallback would test nothing
]
ISAS = ["avx512", "avx2", "base"]


@pytest.fixture
def isa():
    """Gives back the ISA in use before a test that forced one."""
    before = _C.cpu_isa()
    yield
    _C.set_cpu_isa(before)


def use_isa(name):
    if not _C.set_cpu_isa(name):
        pytest.skip(f"this CPU cannot run the {name} build")


def from_bits(bits):
    return torch.as_tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)


def through_kernel(f, dtype):
    """``f`` (float32, float16 or bfloat16) rounded once to ``dtype`` by a CPU kernel: the gated
    residual ``x + gate f`` with ``x = -0`` and ``gate = 1`` is exactly ``f`` before rounding
    (signed zeros and NaN included). Both layouts: one long row (the vector loops of the avx2
    and avx512 builds) and rows of one element (their scalar tails)."""
    outs = []
    for shape in ((1, 1, f.numel()), (1, f.numel(), 1)):
        x = torch.full(shape, -0.0, dtype=dtype)
        gate = torch.ones(1, shape[-1], dtype=dtype)
        y, _ = csrc.gated_residual_jvp(
            x,
            torch.zeros_like(x),
            gate,
            torch.zeros_like(gate),
            f.reshape(shape),
            torch.zeros(shape, dtype=f.dtype),
        )
        outs.append(y.reshape(-1))
    return outs


def assert_same_bits(name, got, want):
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan), f"{name}: NaN where the conversion gives none, or the reverse"
    bits = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[want.dtype]
    diff = (got[~nan].view(bits) != want[~nan].view(bits)).nonzero().flatten()
    assert diff.numel() == 0, (
        f"{name}: {diff.numel()} values differ, e.g. {want[~nan][diff[:4]].float().tolist()} "
        f"became {got[~nan][diff[:4]].float().tolist()}"
    )


def float32_probes():
    """Random float32 patterns, every bfloat16 halfway case of them, every float16 value and
    halfway point (subnormals included) and the edges: infinities, NaNs whose payload would
    carry into the exponent, the float16 overflow threshold 65520 and its neighbours."""
    gen = torch.Generator().manual_seed(0)
    r = torch.randint(-(2**31), 2**31, (1 << 15,), generator=gen, dtype=torch.int64)
    halves = torch.arange(0, 0x7C00, dtype=torch.int64).to(torch.int16).view(torch.float16).float()
    mid = (halves[:-1] + halves[1:]) / 2  # exact in float32
    edges = from_bits([0x7F800000, 0xFF800000, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00000, 0x7F800001, 0x7F7FFFFF,
                       0x7F7F8000, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x38800000, 0x387FFFFF,
                       0x33000000, 0x33000001, 0x33C00000, 0x80000000, 0])  # fmt: skip
    values = torch.cat([from_bits(r), from_bits((r & ~0xFFFF) | 0x8000), halves, mid, edges])
    return torch.cat([values, -values])


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_outputs_round_to_nearest_even_like_torch(name, dtype, isa):
    use_isa(name)
    f = float32_probes()
    if dtype == torch.bfloat16:
        # Hardware bf16 conversions (which torch may use) flush float32 subnormals to zero.
        f = f[(f.abs() >= torch.finfo(torch.float32).tiny) | (f == 0) | ~torch.isfinite(f)]
    for layout, got in zip(("one row", "rows of one"), through_kernel(f, dtype)):
        assert_same_bits(f"{dtype} {layout} [{name}]", got, f.to(dtype))


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_16_bit_input_widens_exactly(name, dtype, isa):
    use_isa(name)
    f = torch.arange(-(2**15), 2**15, dtype=torch.int64).to(torch.int16).view(dtype)
    for layout, got in zip(("one row", "rows of one"), through_kernel(f, torch.float32)):
        assert_same_bits(f"{dtype} {layout} [{name}]", got, f.float())


# -------------------------------------------------------------------------- threads


def every_op(threads, dtype):
    """All six CPU ops on 106 rows (no multiple of 3 or 4) of 384, bias and vectors as the DiT
    passes them, with ``threads`` threads."""
    gen = torch.Generator().manual_seed(1)
    shape = (2, 53, 384)
    x, x_dot, f, f_dot, g = (torch.randn(shape, generator=gen).to(dtype) for _ in range(5))
    mod = torch.randn(2, 6 * 384, generator=gen).to(dtype)
    shift, scale, shift_dot, scale_dot, gate, gate_dot = mod.chunk(6, dim=1)
    bias = torch.randn(384, generator=gen).to(dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        args = {
            "layernorm_modulate_jvp": (x, x_dot, shift, scale, shift_dot, scale_dot),
            "layernorm_modulate_backward": (g, x, scale),
            "gelu_tanh_jvp": (x, x_dot, bias),
            "gelu_tanh_backward": (g, x, bias),
            "silu_jvp": (x, x_dot),
            "gated_residual_jvp": (x, x_dot, gate, gate_dot, f, f_dot),
        }
        return {op: (getattr(csrc, op)(*a), getattr(reference, op)(*f64(*a))) for op, a in args.items()}
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_split_over_any_number_of_threads(dtype):
    """Every row computed once whatever the split (a row lost at a thread boundary would be
    left as torch.empty had it), and the same bits for 1, 2, 3 and 4 threads."""
    runs = {n: every_op(n, dtype) for n in (1, 2, 3, 4)}
    for op, (outs, refs) in runs[1].items():
        for i, (out, ref) in enumerate(zip(outs, refs)):
            assert_close(f"{op}[{i}]", out, ref, dtype)
            for n in (2, 3, 4):
                assert torch.equal(runs[n][op][0][i], out), f"{op}[{i}]: {n} threads give other bits than 1"


# ------------------------------------------------------------- accumulated outputs


def targ(t, dtype=None, shape=None, stride=None, device=-1, ptr=None):
    """A TensorArg describing t, with any field overridden (to build bad calls)."""
    return _C.TensorArg(
        t.data_ptr() if ptr is None else ptr,
        csrc.DTYPE_CODES[t.dtype] if dtype is None else dtype,
        list(t.shape if shape is None else shape),
        list(t.stride() if stride is None else stride),
        device,
    )


def test_sums_overwrite_what_their_outputs_held():
    """dshift, dscale and dbias are sums over rows: the kernels start them from zero, not from
    whatever the caller's buffer held (torch.empty gives no promise)."""
    x, grad = torch.randn(2, 70, 72), torch.randn(2, 70, 72)
    scale, bias = torch.randn(2, 72), torch.randn(72)
    dx = torch.empty_like(x)
    dshift, dscale, dbias = (torch.full(shape, float("nan")) for shape in ((2, 72), (2, 72), (72,)))
    _C.ln_modulate_backward(targ(grad), targ(x), targ(scale), targ(dx), targ(dshift), targ(dscale), 1e-6)
    _, ref_dshift, ref_dscale = reference.layernorm_modulate_backward(*f64(grad, x, scale))
    assert_close("dshift", dshift, ref_dshift, torch.float32)
    assert_close("dscale", dscale, ref_dscale, torch.float32)
    _C.gelu_tanh_backward(targ(x), targ(grad), targ(bias), targ(dx), targ(dbias))
    assert_close("dbias", dbias, reference.gelu_tanh_backward(*f64(grad, x, bias))[1], torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layernorm_backward_of_constant_rows(dtype):
    """Zero variance (padding tokens, a constant image patch): eps alone keeps 1/std finite,
    in the backward as in the forward."""
    x = torch.full((2, 40, 72), 0.75, dtype=dtype)
    grad, scale = torch.randn(2, 40, 72, dtype=dtype), torch.randn(2, 72, dtype=dtype)
    refs = reference.layernorm_modulate_backward(*f64(grad, x, scale), eps=1e-5)
    for name, out, ref in zip(
        ("dx", "dshift", "dscale"), csrc.layernorm_modulate_backward(grad, x, scale, 1e-5), refs
    ):
        assert_close(name, out, ref, dtype)


# ------------------------------------------------------------------------ ISA choice


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(
        next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    )


# Hidden features (MFK_CPU_HIDE_FEATURES) make this CPU stand for others: one without AVX-512BW,
# one with AVX2 but no F16C, one without AVX-512 or FMA.
@pytest.mark.parametrize("hide", ["", "avx512bw", "f16c", "avx512f,fma"])
def test_isa_choice_follows_the_cpu(hide, monkeypatch):
    """No build the CPU lacks is ever accepted (it would die of an illegal instruction); auto,
    and a fresh import without MFK_CPU_ISA, take the widest one it accepts; set_cpu_isa(name)
    runs that very build."""
    flags = cpu_flags() - set(hide.split(","))
    if "sse2" not in flags:
        pytest.skip("needs an x86-64 Linux machine (/proc/cpuinfo flags)")
    assert _C.CPU_ISAS == tuple(ISAS)  # widest first: auto's order
    needs = {name: set(_C.cpu_isa_features(name)) for name in ISAS}
    before = _C.cpu_isa()
    monkeypatch.setenv("MFK_CPU_HIDE_FEATURES", hide)
    accepted, names = {}, {}
    try:
        for name in ISAS:
            accepted[name] = _C.set_cpu_isa(name)
            names[name] = _C.cpu_isa()
        _C.set_cpu_isa("auto")
        automatic = _C.cpu_isa()
    finally:
        monkeypatch.delenv("MFK_CPU_HIDE_FEATURES")
        _C.set_cpu_isa(before)
    for name in ISAS:
        if not needs[name] <= flags:
            assert not accepted[name], (
                f"set_cpu_isa({name!r}) accepted on a CPU without {needs[name] - flags}"
            )
        if accepted[name]:
            assert names[name] == name
    assert accepted["base"] and accepted["avx2"] == (needs["avx2"] <= flags)
    widest = next(name for name in ISAS if accepted[name])
    assert automatic == widest
    env = {k: v for k, v in os.environ.items() if k != "MFK_CPU_ISA"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env["MFK_CPU_HIDE_FEATURES"] = hide
    code = "from mfkernels.backends import csrc; print(csrc._C.cpu_isa())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == widest


def test_every_isa_build_needs_the_features_it_is_compiled_for():
    """Each ``-m`` flag CMakeLists.txt compiles an ISA build with is a feature the dispatcher
    checks before it runs that build: with one missing (say F16C, on a virtual CPU that hides
    it) the build's first instruction of that kind would kill the process (SIGILL)."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for name in ISAS:
        line = re.search(rf"set\(MFK_CPU_FLAGS_{name}\b([^)]*)\)", cmake).group(1)
        compiled_for = {flag[2:] for flag in line.split() if flag.startswith("-m") and "=" not in flag}
        assert set(_C.cpu_isa_features(name)) == compiled_for, name
    with pytest.raises(ValueError, match="name must be 'avx512', 'avx2' or 'base', got 'auto'"):
        _C.cpu_isa_features("auto")


# ------------------------------------------------------------ the bindings' checks


def test_layouts_torch_calls_contiguous_are_taken():
    """Size-1 dims with any stride (torch calls such a view contiguous, and the wrapper passes
    it as it is), modulation shared by the batch (row stride 0) and a one-element bias with a
    stride: all run and match the reference."""
    x = torch.randn(17, 1, 72).transpose(0, 1)  # (1, 17, 72), strides (72, 72, 1)
    x_dot = torch.randn(17, 1, 72).transpose(0, 1)
    assert x.is_contiguous() and x.stride(0) != x.numel()
    shift, scale = (torch.randn(1, 72).expand(3, 72) for _ in range(2))
    args = (x, x_dot, shift[:1], scale[:1], shift[:1], scale[:1])
    for out, ref in zip(csrc.layernorm_modulate_jvp(*args), reference.layernorm_modulate_jvp(*f64(*args))):
        assert_close("size-1 dims", out, ref, torch.float32)
    x3, x3_dot = torch.randn(3, 17, 72), torch.randn(3, 17, 72)
    args = (x3, x3_dot, shift, scale, shift, scale)
    for out, ref in zip(csrc.layernorm_modulate_jvp(*args), reference.layernorm_modulate_jvp(*f64(*args))):
        assert_close("row stride 0", out, ref, torch.float32)
    h, h_dot, bias = torch.randn(5, 1), torch.randn(5, 1), torch.randn(2)[::2]
    for out, ref in zip(
        mfkernels.gelu_tanh_jvp(h, h_dot, bias, backend="cpu"), reference.gelu_tanh_jvp(*f64(h, h_dot, bias))
    ):
        assert_close("strided (1,) bias", out, ref, torch.float32)
    empty = torch.empty(0)
    _C.silu_jvp(*(targ(empty, ptr=0) for _ in range(4)))  # no data, nothing to read


def test_extension_checks_the_arguments_the_wrapper_never_gets_wrong():
    x, x_dot, grad = torch.randn(2, 17, 72), torch.randn(2, 17, 72), torch.randn(2, 17, 72)
    shift, scale = torch.randn(2, 72), torch.randn(2, 72)
    m, m_dot, dx = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    fwd = dict(x=targ(x), x_dot=targ(x_dot), shift=targ(shift), scale=targ(scale), shift_dot=targ(shift),
               scale_dot=targ(scale), m=targ(m), m_dot=targ(m_dot), eps=1e-6)  # fmt: skip
    dshift, dscale = torch.empty(2, 72), torch.empty(2, 72)
    bwd = dict(grad_m=targ(grad), x=targ(x), scale=targ(scale), dx=targ(dx), dshift=targ(dshift),
               dscale=targ(dscale), eps=1e-6)  # fmt: skip
    dtype_error = "x must be float32, float16, bfloat16 or float64"
    cases = [
        (TypeError, dtype_error, _C.ln_modulate_jvp, dict(fwd, x=targ(x, dtype=4))),
        (TypeError, dtype_error, _C.ln_modulate_jvp, dict(fwd, x=targ(x, dtype=-1))),
        (ValueError, "shift must have a non-negative row stride", _C.ln_modulate_jvp,
         dict(fwd, shift=targ(shift, stride=(-72, 1)))),
        (ValueError, "eps must be non-negative", _C.ln_modulate_jvp, dict(fwd, eps=float("nan"))),
        (ValueError, "eps must be non-negative", _C.ln_modulate_backward, dict(bwd, eps=-1e-6)),
        (ValueError, "dscale must be a contiguous", _C.ln_modulate_backward,
         dict(bwd, dscale=targ(dscale, stride=(1, 2)))),
        (ValueError, "dshift must be on the device of x", _C.ln_modulate_backward,
         dict(bwd, dshift=targ(dshift, device=0))),
    ]  # fmt: skip
    for error, message, fn, kwargs in cases:
        with pytest.raises(error, match=message):
            fn(**kwargs)
    bias, dbias = torch.randn(144), torch.empty(72)
    with pytest.raises(ValueError, match="^bias must have unit stride"):
        _C.gelu_tanh_jvp(targ(x), targ(x_dot), targ(bias, shape=(72,), stride=(2,)), targ(m), targ(m_dot))
    with pytest.raises(ValueError, match="dbias must be a contiguous"):
        _C.gelu_tanh_backward(targ(x), targ(grad), targ(bias[:72]), targ(dx), targ(dbias, shape=(71,)))
    with pytest.raises(ValueError, match="gate_dot must have shape"):
        _C.gated_residual_jvp(
            targ(x),
            targ(x_dot),
            targ(shift),
            targ(scale, shape=(2, 71)),
            targ(grad),
            targ(grad),
            targ(m),
            targ(m_dot),
        )
