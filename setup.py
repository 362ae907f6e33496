"""Builds the csrc extension ``mfkernels._C`` with CMake + pybind11 (metadata: pyproject.toml).

No torch at build time: the kernels take raw pointers from a thin Python wrapper, so the build
needs only a C++17 compiler, CMake and pybind11 -- and nvcc for the optional CUDA kernels.

Environment toggles:
  MFK_BUILD_CUDA   auto (default): CUDA kernels when nvcc is found; 0: never; 1: require nvcc
  MFK_CUDA_ARCH    CUDA targets, CMAKE_CUDA_ARCHITECTURES syntax (default "80;90")
  MFK_BUILD_EXT    auto (default): the extension where CMake, a C++ compiler and pybind11 are
                   found, else a pure-Python install with a warning; 1: require it; 0: skip it
                   (every op runs on torch/Triton)
  MFK_PTXAS_VERBOSE=1  print ptxas register/spill reports
  MFK_BUILD_JOBS   parallel compile jobs (default: CPU count)

A compile error in csrc/ (CPU or, where nvcc is found, CUDA) fails the install on purpose: CI
builds with `pip install -e .` and must catch a broken source. A machine without the toolchain
still installs the package: the extension is optional.
"""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
OFF = ("0", "off", "false", "no")
ON = ("1", "on", "true", "yes")


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip().lower()


def find_cuda_toolkit():
    """``(nvcc, toolkit_root)`` or None. nvcc may be a wrapper script outside the toolkit (then
    CMake guesses the wrong prefix and cannot find cudart), so the prefix comes from nvcc's own
    dry run, whose ``TOP=`` line names the real installation."""
    nvcc = os.environ.get("CUDACXX") or shutil.which("nvcc")
    if not nvcc:
        given = [os.environ[k] for k in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(k)]
        for home in given or ["/usr/local/cuda"]:
            if (Path(home) / "bin" / "nvcc").exists():
                nvcc = str(Path(home) / "bin" / "nvcc")
                break
    if not nvcc:
        return None
    try:
        dry = subprocess.run(
            [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        dry = subprocess.CompletedProcess([nvcc], returncode=-1, stdout="", stderr=str(e))
    if dry.returncode != 0:
        print(f"mfkernels: WARNING: {nvcc} does not run ({dry.stderr.strip()[-200:]}); building without CUDA")
        return None
    top = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, re.M)
    root = Path(top.group(1).strip()).resolve() if top else Path(nvcc).resolve().parent.parent
    real_nvcc = root / "bin" / "nvcc"
    return (str(real_nvcc) if real_nvcc.exists() else nvcc), str(root)


def has_pybind11() -> bool:
    """pybind11 for CMake: the Python package (what the isolated build installs), pybind11_DIR,
    or a system install such as Debian's pybind11-dev."""
    if importlib.util.find_spec("pybind11") is not None or os.environ.get("pybind11_DIR"):
        return True
    prefixes = [*filter(None, os.environ.get("CMAKE_PREFIX_PATH", "").split(os.pathsep)), sys.prefix]
    prefixes += ["/usr", "/usr/local", "/opt/homebrew"]
    patterns = ("share/cmake", "lib/cmake", "lib64/cmake", "lib/*/cmake")
    return any(
        glob.glob(os.path.join(prefix, pattern, "pybind11", "pybind11Config.cmake"))
        for prefix in prefixes
        for pattern in patterns
    )


def missing_toolchain() -> str | None:
    """What the extension's build lacks on this machine, or None. Checked before CMake runs:
    there a missing compiler is a configure error, indistinguishable from a broken source."""
    if not shutil.which("cmake"):
        return "no cmake on PATH"
    cxx = os.environ.get("CXX", "").split()
    if not any(shutil.which(c) for c in cxx[:1] or ("c++", "g++", "clang++")):
        return f"no C++ compiler ({'CXX=' + cxx[0] if cxx else 'c++, g++ or clang++'} not found)"
    if not has_pybind11():
        return "no pybind11 (pip install pybind11)"
    return None


def cuda_archs() -> str:
    raw = os.environ.get("MFK_CUDA_ARCH", "80;90")
    archs = [a.replace(".", "") for a in re.split(r"[;,\s]+", raw.strip()) if a]
    return ";".join(archs)


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        missing = missing_toolchain()
        if missing and _env("MFK_BUILD_EXT", "auto") in ON:
            raise RuntimeError(f"MFK_BUILD_EXT=1 but {missing}")
        if missing:
            print(
                f"mfkernels: WARNING: {ext.name} not built ({missing}); the cpu and cuda backends are "
                "off and every op runs on torch/Triton. Install the toolchain and rerun pip install -e ."
            )
            ext.optional = True  # so that setuptools does not look for the file to copy
            return
        start = time.perf_counter()
        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
        ]
        try:
            import pybind11

            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass  # a system pybind11 (e.g. pybind11-dev) is found by CMake itself
        if _env("MFK_PTXAS_VERBOSE") not in ("", *OFF):
            args.append("-DMFK_PTXAS_VERBOSE=ON")

        mode = _env("MFK_BUILD_CUDA", "auto")
        toolkit = None if mode in OFF else find_cuda_toolkit()
        if toolkit:
            nvcc, root = toolkit
            args += [
                "-DMFK_BUILD_CUDA=ON",
                f"-DCMAKE_CUDA_COMPILER={nvcc}",
                f"-DCUDAToolkit_ROOT={root}",
                f"-DMFK_CUDA_ARCH={cuda_archs()}",
            ]
            print(f"mfkernels: building the CUDA kernels with {nvcc} for {cuda_archs()}")
        elif mode in ("1", "on", "true", "yes"):
            raise RuntimeError("MFK_BUILD_CUDA=1 but no nvcc was found (PATH, CUDACXX, CUDA_HOME)")
        else:
            args.append("-DMFK_BUILD_CUDA=OFF")
            why = "MFK_BUILD_CUDA=0" if mode in OFF else "no nvcc found"
            print(f"mfkernels: building the CPU kernels only ({why})")
        if "CMAKE_GENERATOR" not in os.environ and shutil.which("ninja"):
            args.append("-GNinja")

        jobs = os.environ.get("MFK_BUILD_JOBS") or str(os.cpu_count() or 1)
        # A cache from another generator or toolkit would make cmake refuse to configure.
        (build_temp / "CMakeCache.txt").unlink(missing_ok=True)
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "--parallel", jobs], cwd=build_temp, check=True)
        print(f"mfkernels: built {ext.name} in {time.perf_counter() - start:.1f} s")


def cmake_requirement() -> list[str]:
    """CMake from PyPI only where the system has none (read by the PEP 517 build backend)."""
    return [] if shutil.which("cmake") else ["cmake>=3.18"]


build_ext_enabled = _env("MFK_BUILD_EXT", "auto") not in OFF
setup(
    ext_modules=[CMakeExtension("mfkernels._C")] if build_ext_enabled else [],
    cmdclass={"build_ext": CMakeBuild},
    setup_requires=cmake_requirement() if build_ext_enabled else [],
)
