"""What a non-editable install (``pip install .``, a wheel, an sdist) gives a user, which the
tests' editable install cannot show: the sdist carries what setup.py's CMake build of
``mfkernels._C`` reads (CMakeLists.txt and csrc/), neither it nor the wheel ships the
repository's tests, benchmarks or tools, and the metadata is what pyproject.toml says.

Offline and without build isolation (PIP_NO_INDEX, the installed setuptools), as
tests/mfkernels/test_csrc_build.py; the wheel skips the extension (MFK_BUILD_EXT=0) to stay fast.
"""

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
DIST_INFO = f"{PROJECT['name'].replace('-', '_')}-{PROJECT['version']}.dist-info"
PACKAGES = ("mfkernels", "meanflow")
# What a checkout holds beside its sources: built or cached files, never shipped.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", "__pycache__", "*.py[cod]", "*.so", "build", "dist", "*.egg-info", "runs", ".*_cache"
)


def _setuptools_too_old() -> str | None:
    """Why these builds cannot run here (they use the installed setuptools), or None."""
    try:
        import setuptools
    except ImportError:
        return "no setuptools"
    need = PYPROJECT["build-system"]["requires"]
    floor = next(re.search(r">=([\d.]+)", r).group(1) for r in need if r.startswith("setuptools"))
    version = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
    if version < tuple(int(x) for x in floor.split(".")[:2]):
        return f"setuptools {setuptools.__version__} is older than the build's setuptools>={floor}"
    return None


pytestmark = pytest.mark.skipif(_setuptools_too_old() is not None, reason=str(_setuptools_too_old()))


def _env(**overrides) -> dict:
    env = dict(os.environ, PIP_NO_INDEX="1", MFK_BUILD_EXT="0", MFK_BUILD_CUDA="0")
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """``(copy of the checkout, unpacked sdist, the sdist's paths without its top folder)``."""
    tmp = tmp_path_factory.mktemp("sdist")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    build = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta; "
         "print(build_meta.build_sdist(sys.argv[1]))", str(tmp / "dist")],
        cwd=src, capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    archive = tmp / "dist" / build.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp / "unpacked", **safe)
        names = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()]
    (unpacked,) = (tmp / "unpacked").iterdir()
    return src, unpacked, names


def test_sdist_holds_what_the_extension_build_reads(sdist):
    # Without them pip install of the sdist failed wherever a compiler was found: CMake
    # stopped with "does not appear to contain CMakeLists.txt".
    src, _, names = sdist
    assert "CMakeLists.txt" in names
    assert "LICENSE" in names  # Apache-2.0 asks for its text to travel with every copy
    named = re.findall(r"csrc/[\w/]+\.(?:cpp|cu|h)", (src / "CMakeLists.txt").read_text())
    assert named, "CMakeLists.txt names no csrc sources: update this test"
    every = [p.relative_to(src).as_posix() for p in (src / "csrc").rglob("*") if p.is_file()]
    assert sorted(set(named + every) - set(names)) == []


def test_sdist_configures_with_cmake(sdist, tmp_path):
    # The user's symptom itself: CMake's configure step on the unpacked sdist.
    pybind11 = pytest.importorskip("pybind11")
    if not shutil.which("cmake") or not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("needs cmake and a C++ compiler")
    _, unpacked, _ = sdist
    run = subprocess.run(
        ["cmake", "-S", str(unpacked), "-B", str(tmp_path), "-DMFK_BUILD_CUDA=OFF",
         f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]


def test_sdist_ships_no_repository_extras(sdist):
    _, _, names = sdist
    extras = [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "tools", "docs", ".ci")]
    assert extras == []
    assert [n for n in names if n.endswith((".so", ".pyc"))] == []


def test_wheel_from_the_sdist_holds_the_packages_and_nothing_else(sdist, tmp_path):
    src, unpacked, _ = sdist
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w",
         str(tmp_path), str(unpacked)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {*PACKAGES, DIST_INFO}, top
    modules = {p.relative_to(src).as_posix() for pkg in PACKAGES for p in (src / pkg).rglob("*.py")}
    assert sorted(modules - set(names)) == []

    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(f"{DIST_INFO}/METADATA"))
    assert meta["Name"] == PROJECT["name"] and meta["Version"] == PROJECT["version"]
    assert meta["Requires-Python"] == PROJECT["requires-python"]
    # An SPDX expression: the table form setuptools deprecates wrote a bare License: field.
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["License-File"] == "LICENSE" and f"{DIST_INFO}/licenses/LICENSE" in names
    plain = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(plain) == sorted(PROJECT["dependencies"])
    assert set(meta.get_all("Provides-Extra")) == set(PROJECT["optional-dependencies"])
