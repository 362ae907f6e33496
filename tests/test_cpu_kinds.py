"""The numeric tests hold on every kind of x86 CPU, not only the one that runs the suite.

Rounding differs between CPUs: ATen picks its vector kernels by instruction set
(``ATEN_CPU_CAPABILITY``) and MKL its GEMM code path by CPU (``MKL_CBWR`` forces one). A
comparison that divides by a reference which is zero in exact arithmetic passes where the
rounding happens to give zero and fails where it gives 1e-16 (it did on an AVX-512 Xeon).
"""

import os
import signal
import subprocess
import sys

import pytest
import torch
from numerics import rel_err

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests that compare numbers with torch's own kernels: the ops, the DiT, the loss.
NUMERIC_TESTS = ["tests/mfkernels", "tests/meanflow/test_models.py", "tests/meanflow/test_loss.py"]
# Other kinds than the one this process runs with: ATen's kernels for an instruction set,
# paired with another MKL code path.
CPU_KINDS = {
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512"},
}


def test_rounding_noise_on_an_exact_zero_is_no_error():
    zero = torch.zeros(4, dtype=torch.float64)
    assert rel_err(zero + 1e-16, zero) <= 1e-15
    assert rel_err(zero + 0.1, zero) == pytest.approx(0.1)  # a wrong zero is still an error
    assert rel_err(zero + 1e-3, zero, floor=1e-2) == pytest.approx(0.1)
    ref = torch.tensor([4.0, -2.0], dtype=torch.float64)
    assert rel_err(ref + 4e-6, ref) == pytest.approx(1e-6)  # relative to max |ref| above the floor


def _capability(env):
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CPU_KINDS))
def test_numeric_tests_pass_on_another_cpu_kind(kind):
    env = {**os.environ, **CPU_KINDS[kind], "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "1")}
    capability = _capability(env)
    if capability == torch.backends.cpu.get_cpu_capability():
        pytest.skip(f"{capability} is the kind this run already has")
    if capability.lower() != kind:
        pytest.skip(f"this CPU cannot run ATen's {kind} kernels (it runs {capability})")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *NUMERIC_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if run.returncode == -signal.SIGILL:  # torch offers the kind, the CPU lacks one of its instructions
        pytest.skip(f"ATen's {kind} kernels hit an illegal instruction on this CPU: {run.stderr[-300:]}")
    assert run.returncode == 0, f"under {CPU_KINDS[kind]}:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
