"""setup.py: the csrc extension is optional. A machine without a C++ compiler (or CMake, or
pybind11) still installs the package, without ``mfkernels._C``; ``MFK_BUILD_EXT=1`` makes the
missing toolchain an error instead."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("setup.py", "pyproject.toml", "README.md", "CMakeLists.txt", "csrc", "mfkernels", "meanflow")


def build_wheel(tmp_path: Path, **env_overrides) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``pip wheel`` of a copy of the sources with only CMake on PATH (no compiler): the result
    and the wheel's file names."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.so", "build", "*.egg-info")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    tools = tmp_path / "bin"
    tools.mkdir()
    if shutil.which("cmake"):
        (tools / "cmake").symlink_to(shutil.which("cmake"))
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CC", "CUDACXX")}
    env.update(PATH=str(tools), MFK_BUILD_CUDA="0", PIP_NO_INDEX="1", **env_overrides)
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps", "-w",
         str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    wheels = list((tmp_path / "dist").glob("*.whl")) if run.returncode == 0 else []
    names = zipfile.ZipFile(wheels[0]).namelist() if wheels else []
    return run, names


def test_install_without_a_compiler_skips_the_extension(tmp_path):
    pytest.importorskip("setuptools")
    run, names = build_wheel(tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "mfkernels/__init__.py" in names
    assert not any(name.startswith("mfkernels/_C") for name in names)
    assert "mfkernels._C not built (no C++ compiler" in run.stdout + run.stderr or not shutil.which("cmake")


def test_required_extension_without_a_compiler_fails(tmp_path):
    pytest.importorskip("setuptools")
    run, _ = build_wheel(tmp_path, MFK_BUILD_EXT="1")
    assert run.returncode != 0
    assert "MFK_BUILD_EXT=1 but no" in run.stdout + run.stderr
