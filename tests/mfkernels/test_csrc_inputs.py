"""The csrc extension's ``cpu`` backend on the awkward inputs users hand the public ops: 0-d and
one-element tensors, expanded (stride-0) and offset views, thread counts, and what happens
when ``mfkernels._C`` is missing or stale or asked for an ISA that does not exist.
Every result is held to the float64 reference (docs/design.md section 3).
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from numerics import assert_close, f64

import mfkernels
from mfkernels import reference
from mfkernels.backends import csrc

_C = csrc._C
ROOT = Path(__file__).resolve().parents[2]
needs_ext = pytest.mark.skipif(_C is None, reason=str(csrc.import_error))
pytestmark = pytest.mark.filterwarnings("error:mfkernels")  # a silent fallback would test nothing


def grads(fn, *inputs):
    """``fn``'s first output and the gradients of a weighted sum of it w.r.t. ``inputs``."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)[0]
    weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)
    (out.double() * weight).sum().backward()
    return [out.detach(), *(t.grad for t in inputs)]


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("backend", ["cpu", None])
def test_gelu_on_a_0d_tensor(dtype, backend):
    """A scalar is a valid GELU input (as for SiLU): the kernels see one row of one element."""
    x, x_dot = torch.tensor(0.7).to(dtype), torch.tensor(-1.3).to(dtype)
    y, y_dot = mfkernels.gelu_tanh_jvp(x, x_dot, backend=backend)
    y_ref, y_dot_ref = reference.gelu_tanh_jvp(*f64(x, x_dot))
    assert y.shape == () and y_dot.shape == () and y.dtype == dtype
    assert_close("y", y, y_ref, dtype)
    assert_close("y_dot", y_dot, y_dot_ref, dtype)
    run = lambda b: grads(lambda t: mfkernels.gelu_tanh_jvp(t, x_dot, backend=b), x)  # noqa: E731
    for name, out, ref in zip(("y", "dx"), run(backend), run("reference")):
        assert out.shape == () and out.dtype == dtype
        assert_close(name, out, ref.double(), dtype)


@needs_ext
def test_vectors_with_strided_columns():
    """A gate, a modulation vector or a GELU bias whose columns are not adjacent (a transposed
    or every-other-column view): the kernels read unit-stride columns, so these are copied."""
    x, x_dot, f, f_dot = (torch.randn(2, 17, 72) for _ in range(4))
    gate, gate_dot, shift, scale = (torch.randn(72, 2).t() for _ in range(4))
    args = (x, x_dot, gate, gate_dot, f, f_dot)
    for out, ref in zip(
        mfkernels.gated_residual_jvp(*args, backend="cpu"), reference.gated_residual_jvp(*f64(*args))
    ):
        assert_close("gated residual", out, ref, torch.float32)
    args = (x, x_dot, shift, scale, gate, gate_dot)
    for out, ref in zip(
        mfkernels.layernorm_modulate_jvp(*args, backend="cpu"), reference.layernorm_modulate_jvp(*f64(*args))
    ):
        assert_close("LayerNorm", out, ref, torch.float32)
    bias = torch.randn(144)[::2]
    for out, ref in zip(
        mfkernels.gelu_tanh_jvp(x, x_dot, bias, backend="cpu"), reference.gelu_tanh_jvp(*f64(x, x_dot, bias))
    ):
        assert_close("GELU", out, ref, torch.float32)
    run = lambda b: grads(lambda t: mfkernels.gelu_tanh_jvp(x, x_dot, t, backend=b), bias)  # noqa: E731
    for name, out, ref in zip(("y", "dbias"), run("cpu"), run("reference")):
        assert_close(name, out, ref, torch.float32)


@needs_ext
def test_layernorm_backward_op_takes_a_float32_gradient_of_bf16_x():
    """The backward op called with a gradient of another dtype than x (a caller's float32 loss
    gradient): the extension takes it rounded to x's dtype, within bf16 of the reference's."""
    x, scale = torch.randn(2, 17, 72).bfloat16(), torch.randn(2, 72).bfloat16()
    grad_m = torch.randn(2, 17, 72)
    op = torch.ops.mfkernels.layernorm_modulate_backward.default
    refs = reference.layernorm_modulate_backward(*f64(grad_m, x, scale))
    for name, out, ref in zip(("dx", "dshift", "dscale"), op(grad_m, x, scale, 1e-6, "cpu"), refs):
        assert_close(name, out, ref, torch.bfloat16)


# ------------------------------------------------------------ a missing or stale _C

# Runs in a fresh interpreter whose mfkernels._C is absent, fails to load, or is another build
# (no API_VERSION or a newer one; a GELU JVP that writes nothing, no GELU backward); prints the
# warnings seen and the error of a GELU forward and backward on the CPU against the reference.
_IMPORT_SCENARIO = r"""
import importlib.abc, json, sys, types, warnings
kind = sys.argv[1]

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "mfkernels._C":
            return None
        if kind == "missing":
            raise ModuleNotFoundError("No module named 'mfkernels._C'", name=name)
        raise ImportError("mfkernels/_C.so: undefined symbol: _ZN3mfk3cpu3isaEv")

if kind in ("stale", "newer"):
    stale = types.ModuleType("mfkernels._C")
    if kind == "newer":
        stale.API_VERSION = 10**6
    stale.WITH_CUDA = False
    stale.TensorArg = stale.gelu_tanh_jvp = lambda *args, **kwargs: None
    sys.modules["mfkernels._C"] = stale
else:
    sys.meta_path.insert(0, Finder())

import torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import mfkernels
    from mfkernels import reference
    errors = []
    for _ in range(2):
        x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
        y, _ = mfkernels.gelu_tanh_jvp(x, torch.ones_like(x))
        y.sum().backward()
        x_ref = x.detach().requires_grad_()
        y_ref = reference.gelu_tanh(x_ref)
        y_ref.sum().backward()
        errors += [(y - y_ref).abs().max().item(), (x.grad - x_ref.grad).abs().max().item()]
from mfkernels.backends import csrc
print(json.dumps({"warnings": [str(w.message) for w in caught], "errors": errors,
                  "import_error": csrc.import_error}))
"""


@pytest.mark.parametrize("kind", ["missing", "broken", "stale", "newer"])
def test_missing_or_stale_extension_falls_back_with_one_message(kind):
    """Without a usable _C every CPU op runs on the reference: a module that is not built is no
    news (auto dispatch never needed it), one that does not load or is stale says so once. A
    build from newer sources is stale too: its bindings are not the ones this module calls."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCENARIO, kind], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert max(result["errors"]) < 1e-12
    messages = [m for m in result["warnings"] if "mfkernels._C" in m]
    expected = {"missing": [], "broken": ["does not load"]}.get(kind, ["is stale"])
    assert len(messages) == len(expected), messages
    for message, fragment in zip(messages, expected):
        assert fragment in message and "backends are off" in message
    assert result["import_error"] is not None
    if kind in ("stale", "newer"):
        assert "rebuild it with pip install -e ." in result["import_error"]


# ------------------------------------------------------------------------- ISA choice


@needs_ext
def test_set_cpu_isa_refuses_an_unknown_name():
    """A misspelt ISA raises, naming the choices, and keeps the kernels in use; a known one the
    CPU lacks is False (tests skip on it)."""
    before = _C.cpu_isa()
    for name in ("avx-512", "AVX2", "", "sse4"):
        with pytest.raises(ValueError, match="name must be 'auto', 'avx512', 'avx2' or 'base'"):
            _C.set_cpu_isa(name)
        assert _C.cpu_isa() == before
    try:
        assert _C.set_cpu_isa("base") and _C.cpu_isa() == "base"
    finally:
        _C.set_cpu_isa(before)  # not "auto": under MFK_CPU_ISA the session runs on its ISA


def _import_csrc(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@needs_ext
@pytest.mark.parametrize(
    "value, hidden_features",
    [("avx-2", ""), ("base", ""), ("auto", ""), ("avx512", "avx512f")],
    ids=["misspelt", "base", "auto", "avx512-on-a-cpu-without-it"],
)
def test_mfk_cpu_isa_is_honoured_or_said_ignored_once(value, hidden_features):
    """A level the extension has and the CPU runs is taken (nothing to say), ``auto`` is its own
    choice (nothing to say either), anything else is ignored with one warning."""
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from mfkernels.backends import csrc\n"
        "print(csrc._C.cpu_isa())\n"
        "print([m for m in map(str, (w.message for w in caught)) if 'mfkernels' in m or 'MFK' in m])\n"
        "csrc._C.set_cpu_isa('auto')\n"
        "print(csrc._C.cpu_isa())\n"
    )
    run = _import_csrc(code, MFK_CPU_ISA=value, MFK_CPU_HIDE_FEATURES=hidden_features)
    assert run.returncode == 0, run.stderr[-3000:]
    isa, messages, automatic = run.stdout.strip().splitlines()[-3:]
    if value == "avx-2":
        assert isa == automatic and "MFK_CPU_ISA='avx-2' ignored (not one of" in messages
    elif hidden_features:
        assert isa == automatic != value and "MFK_CPU_ISA='avx512' ignored (this CPU lacks it)" in messages
    else:
        assert isa == (automatic if value == "auto" else value) and messages == "[]"
    assert messages.count("MFK_CPU_ISA") <= 1


# -------------------------------------------------------------------------- compile


@needs_ext
def test_compiled_block_on_cpu_backend_matches_eager():
    """torch.compile(fullgraph=True) through every cpu op, forward and backward, against eager;
    the modulation vectors are strided chunks and the bias a stride-0 expansion."""

    def block(x, x_dot, mod, bias, backend="cpu"):
        shift, scale, gate = mod.chunk(6, dim=1)[:3]
        m, m_dot = mfkernels.layernorm_modulate_jvp(x, x_dot, shift, scale, shift, scale, backend=backend)
        h, h_dot = mfkernels.gelu_tanh_jvp(m, m_dot, bias.expand(x.shape[-1]), backend=backend)
        s, s_dot = mfkernels.silu_jvp(h, h_dot, backend=backend)
        return mfkernels.gated_residual_jvp(x, x_dot, gate, gate.detach(), s, s_dot, backend=backend)

    x, x_dot, mod, bias = torch.randn(2, 5, 16), torch.randn(2, 5, 16), torch.randn(2, 96), torch.randn(1)
    # aot_eager: the ops' registrations through dynamo and AOTAutograd, not inductor's C++ code,
    # which under ATEN_CPU_CAPABILITY=default emits at::vec without its header (torch 2.14).
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    with warnings.catch_warnings():  # csrc has no gated residual backward: the reference runs it
        warnings.filterwarnings("ignore", "mfkernels.gated_residual_backward")
        outs = grads(lambda x, mod, bias: compiled(x, x_dot, mod, bias), x, mod, bias)
    refs = grads(lambda x, mod, bias: block(x, x_dot, mod, bias, backend="reference"), x, mod, bias)
    for name, out, ref in zip(("y", "dx", "dmod", "dbias"), outs, refs):
        assert_close(name, out, ref, torch.float32)


def test_a_module_the_extension_needs_missing_is_not_taken_for_no_extension():
    """The extension built but one of its own imports missing: that error, not a quiet
    fallback as if the optional extension had never been built."""
    code = (
        "import importlib.abc, sys\n"
        "class Finder(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mfkernels._C':\n"
        "            dep = 'mfk_runtime_dep'\n"
        "            raise ModuleNotFoundError(f'No module named {dep!r}', name=dep)\n"
        "sys.meta_path.insert(0, Finder())\n"
        "from mfkernels.backends import csrc\n"
    )
    run = _import_csrc(code)
    assert run.returncode != 0 and "No module named 'mfk_runtime_dep'" in run.stderr, run.stderr[-3000:]


@needs_ext
def test_silu_of_a_strided_tangent():
    """A transposed tangent (the extension takes contiguous rows only) is copied, not refused."""
    x, x_dot = torch.randn(6, 5), torch.randn(5, 6).t()
    for name, out, ref in zip(("y", "y_dot"), csrc.silu_jvp(x, x_dot), reference.silu_jvp(*f64(x, x_dot))):
        assert_close(name, out, ref, torch.float32)
