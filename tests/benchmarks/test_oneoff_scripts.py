"""The one-off device scripts under benchmarks/scripts/ stay runnable against the current code."""

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "benchmarks" / "scripts").glob("*.py"))


def test_there_are_scripts_and_each_is_listed():
    listing = (ROOT / "benchmarks" / "scripts" / "README.md").read_text()
    assert SCRIPTS
    for script in SCRIPTS:
        assert f"`{script.name}`" in listing


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_what_a_script_imports_exists(script):
    """Most of them need a GPU to run: at least every name they import must still be there."""
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}")
    # Whatever they reach through the step library (``T.name``) exists too.
    from benchmarks import training_step

    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "T":
            assert hasattr(training_step, node.attr), node.attr


def test_step_host_vs_device_runs_from_anywhere(tmp_path):
    """With no time budget every case is skipped: the script starts, builds its loss settings
    and ends, run from outside the repository."""
    env = dict(os.environ, DIAG_BUDGET="0")
    script = ROOT / "benchmarks" / "scripts" / "step_host_vs_device.py"
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SKIP (budget)" in proc.stdout and "total" in proc.stdout


def test_step_host_vs_device_gives_fm_every_mode_the_fused_step_gets():
    """Each (preset, batch) the fused step is replayed as CUDA graphs in, FM is too, so that
    no graphed fused step is set against an FM step without graphs."""
    script = ROOT / "benchmarks" / "scripts" / "step_host_vs_device.py"
    graphed = {"fm": set(), "fused": set()}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run":
            preset, batch, variant = (ast.unparse(a) for a in node.args[:3])
            mode = next((ast.unparse(k.value) for k in node.keywords if k.arg == "mode"), None)
            if mode is not None:
                graphed["fm" if variant.startswith("'fm") else "fused"].add((preset, batch, mode))
    assert graphed["fused"] and graphed["fused"] <= graphed["fm"], graphed["fused"] - graphed["fm"]


@pytest.mark.skipif(not importlib.util.find_spec("triton"), reason="needs triton (the interpreter)")
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script is the diagnosis: run it by hand")
def test_ragged_tile_repro_quick_cases_are_right_in_the_interpreter():
    """The fault it looks for is GPU-only: in the interpreter every case must come out right,
    with the errors split by head-dim part and query rows."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "scripts"))
    try:
        repro = importlib.import_module("ragged_tile_repro")
    finally:
        sys.path.remove(str(ROOT / "benchmarks" / "scripts"))
    rows = repro.main(["--quick"])
    assert [r["verdict"] for r in rows] == ["ok"] * 4 and rows[-1]["causal"]
    assert all(r["O cols>=64"] is not None and r["O"] < 1e-5 for r in rows)


def test_tangent_rounding_emulation_is_the_kernels_maths():
    """In fp32 the emulated kernel is the reference to fp32 rounding (a dropped or misplaced
    term is not); in bf16 the stored O' stays within the GPU test's bound, and rounding the
    exact O' costs at most half a unit in the last place (2^-8 of a value)."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "scripts"))
    try:
        emulation = importlib.import_module("tangent_rounding_emulation")
    finally:
        sys.path.remove(str(ROOT / "benchmarks" / "scripts"))
    stored, _, floor = emulation.errors(3.0, 100, 72, torch.float32)
    assert stored < 1e-5 and floor < 1e-7
    stored, before_storing, floor = emulation.errors(3.0, 100, 72, torch.bfloat16)
    assert 0 < floor <= 2**-8 and before_storing < 8e-3 and stored < 8e-3
