"""Curated mutation testing: plant one realistic bug at a time and check that the tests fail.

    python tools/mutants.py                    # every mutant in tools/mutant_catalog.py
    python tools/mutants.py --only loss.py     # those whose name or file contains "loss.py"
    python tools/mutants.py --list             # the catalog, without running anything

The working tree (tracked and untracked-but-not-ignored files, plus the built extension
``mfkernels/_C*.so``) is copied to a temporary folder once; each mutant edits one file of the
copy, runs its own few test files there (``pytest -x``: the first failure kills it) and puts
the file back. A mutant of the extension's C++ sources (``csrc/cpu``, the bindings) is first
compiled into the copy's extension (CMake, CPU kernels only: 10-60 s); one that does not
compile is an error to mend, not a kill. The working tree itself is never written. A mutant
whose source text is no longer in its file (the code has moved on) is reported as "does not
apply", not run.

Verdicts: killed (a test failed, the tests could not even import the mutated code, or a signal
such as SIGSEGV ended them),
timeout (counted as killed: the bug hangs the tests), survived (every selected test passed:
a missing test, or an equivalent mutant), does not apply, error (pytest itself failed, e.g.
a test path that no longer exists). Before the mutants, each distinct test selection runs
once on the unmutated copy (``--no-baseline`` skips this): a selection that fails there
would "kill" every mutant. Exit status 0 when nothing survived and nothing errored, else 1.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from mutant_catalog import CATALOG, Mutant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Ignored by git but needed by the tests: the built csrc extension.
BUILT_FILES = ("mfkernels/_C*.so", "mfkernels/_C*.pyd")
# The sources of the extension's CPU build: a mutant of one is compiled into the copy's
# extension before its tests run (CMake, CPU kernels only), and the copied extension is put
# back after it. The CUDA kernels are not rebuilt (no GPU runs the mutants' tests).
COMPILED_SOURCES = ("csrc/cpu/", "csrc/mfkernels_api.cpp", "csrc/kernels.h")
# pytest exit codes: 1 tests failed, 2 interrupted or collection errors (the mutated code does
# not import), 3 internal error, 4 usage error, 5 no tests collected. A negative code is a
# signal that ended the tests (SIGSEGV: the Triton interpreter writing out of bounds on some
# CPUs, where others fail an assert): the suite fails as surely, so the mutant is killed too.
KILLED_CODES = (1, 2)


@dataclass
class Result:
    name: str
    path: str
    verdict: str
    seconds: float
    detail: str = ""


def tracked_files(root: str) -> list[str]:
    """Paths (relative to ``root``) of the files git would show: tracked, or untracked and not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    files = [p for p in out.split("\0") if p and os.path.isfile(os.path.join(root, p))]
    for pattern in BUILT_FILES:
        files += [os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern))]
    return files


def copy_tree(root: str, dest: str) -> None:
    for rel in tracked_files(root):
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), target)


def test_env(tree: str) -> dict:
    """The copy first on the import path (an editable install may point elsewhere), no
    bytecode caches (a mutant and its restored original can share a size and an mtime
    second), and Triton's interpreter where there is no GPU."""
    env = dict(os.environ, PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE="1")
    if not _has_cuda():
        env.setdefault("TRITON_INTERPRET", "1")
    return env


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def run_pytest(tree: str, tests: tuple[str, ...], timeout: float) -> tuple[int | None, float, str]:
    """``(exit code or None on timeout, seconds, last output line)`` of ``pytest -x`` on ``tests``."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=tree,
        env=test_env(tree),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # pytest and any worker it started
        proc.communicate()
        return None, time.perf_counter() - start, f"no result after {timeout:.0f} s"
    lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    return proc.returncode, time.perf_counter() - start, lines[-1] if lines else ""


def verdict(code: int | None) -> str:
    if code is None:
        return "timeout"
    if code == 0:
        return "survived"
    return "killed" if code in KILLED_CODES or code < 0 else "error"


def apply(mutant: Mutant, tree: str) -> tuple[bytes | None, str]:
    """Edit the copy: ``(original bytes, "")``, or ``(None, why it does not apply)``."""
    path = os.path.join(tree, mutant.path)
    if not os.path.isfile(path):
        return None, f"{mutant.path} does not exist"
    original = open(path, "rb").read()
    count = original.decode().count(mutant.find)
    if count != 1:
        where = "is not in" if count == 0 else f"occurs {count} times in"
        return None, f"its source text {where} {mutant.path}"
    with open(path, "wb") as f:
        f.write(original.decode().replace(mutant.find, mutant.replace).encode())
    return original, ""


def restore(mutant: Mutant, tree: str, original: bytes) -> None:
    path = os.path.join(tree, mutant.path)
    with open(path, "wb") as f:
        f.write(original)
    if open(path, "rb").read() != original:
        raise RuntimeError(f"could not restore {mutant.path} in {tree}: stopping")


class ExtensionBuild:
    """The copy's CMake build of the extension's CPU kernels, configured on first use. The
    copied extension files are kept aside and put back after each mutant."""

    def __init__(self, tree: str):
        self.tree = tree
        self.build_dir = os.path.join(tree, ".mutant-build")
        self.copied: dict[str, bytes] | None = None
        self.configured = False

    def build(self, timeout: float) -> str:
        """Compile the copy's sources into its ``mfkernels/``: ``""``, or why it failed."""
        if self.copied is None:
            self.copied = {p: open(p, "rb").read() for pattern in BUILT_FILES
                           for p in glob.glob(os.path.join(self.tree, pattern))}  # fmt: skip
        if not self.configured:  # until it succeeds: a failed configure is not the next mutant's error
            os.makedirs(self.build_dir, exist_ok=True)
            configure = [
                "cmake",
                self.tree,
                "-DMFK_BUILD_CUDA=OFF",
                f"-DPython_EXECUTABLE={sys.executable}",
                f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={os.path.join(self.tree, 'mfkernels')}",
            ]
            try:
                import pybind11

                configure.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
            except ImportError:
                pass  # a system pybind11 is found by CMake itself
            why = self._run(configure, timeout, "CMake could not configure the copy")
            if why:
                return why
            self.configured = True
        jobs = str(os.cpu_count() or 1)
        return self._run(["cmake", "--build", ".", "--parallel", jobs], timeout, "does not compile")

    def _run(self, cmd: list[str], timeout: float, failure: str) -> str:
        try:
            proc = subprocess.run(cmd, cwd=self.build_dir, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{failure}: {' '.join(cmd[:2])} took over {timeout:.0f} s"
        if proc.returncode == 0:
            return ""
        output = (proc.stdout + proc.stderr).decode(errors="replace").splitlines()
        errors = [line.strip() for line in output if "error" in line.lower()]
        return f"{failure}: {(errors or output or ['no output'])[0]}"

    def put_back(self) -> None:
        for pattern in BUILT_FILES:
            for path in glob.glob(os.path.join(self.tree, pattern)):
                os.remove(path)
        for path, data in (self.copied or {}).items():
            with open(path, "wb") as f:
                f.write(data)


def run_mutant(mutant: Mutant, tree: str, timeout: float, build: ExtensionBuild | None = None) -> Result:
    original, why = apply(mutant, tree)
    if original is None:
        return Result(mutant.name, mutant.path, "does not apply", 0.0, why)
    compiled = mutant.path.startswith(COMPILED_SOURCES)
    try:
        if compiled:
            build = build or ExtensionBuild(tree)
            start = time.perf_counter()
            why = build.build(timeout)
            if why:  # a mutant that does not compile plants no bug: mend it
                return Result(mutant.name, mutant.path, "error", time.perf_counter() - start, why)
        code, seconds, last = run_pytest(tree, mutant.tests, timeout)
    finally:
        restore(mutant, tree, original)
        if compiled:
            build.put_back()
    return Result(mutant.name, mutant.path, verdict(code), seconds, last)


def run_baselines(mutants: list[Mutant], tree: str, timeout: float) -> list[str]:
    """Each distinct test selection on the unmutated copy; the failing ones, described."""
    failures = []
    for tests in dict.fromkeys(m.tests for m in mutants):
        code, seconds, last = run_pytest(tree, tests, timeout)
        outcome = "passed" if code == 0 else verdict(code).replace("killed", "failed")
        print(f"baseline {' '.join(tests)}: {outcome} in {seconds:.0f} s", flush=True)
        if code != 0:
            failures.append(f"{' '.join(tests)}: {last}")
    return failures


def summary(results: list[Result]) -> str:
    """Killed / applied per file, then the survivors, errors and mutants that do not apply."""
    lines = []
    for path in dict.fromkeys(r.path for r in results):
        mine = [r for r in results if r.path == path]
        applied = [r for r in mine if r.verdict != "does not apply"]
        killed = sum(r.verdict in ("killed", "timeout") for r in applied)
        skipped = len(mine) - len(applied)
        note = f" ({skipped} do not apply)" if skipped else ""
        lines.append(f"  {path}: {killed}/{len(applied)} killed{note}")
    for kind in ("survived", "error", "does not apply"):
        for r in results:
            if r.verdict == kind:
                lines.append(f"  {kind}: {r.name} ({r.path}) {r.detail}")
    return "\n".join(lines)


def select(catalog: list[Mutant], patterns: list[str]) -> list[Mutant]:
    if not patterns:
        return list(catalog)
    return [m for m in catalog if any(p in m.name or p in m.path for p in patterns)]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run the mutants whose name or file contains TEXT (repeatable)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the selected mutants and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (default 600)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout:g}")
    mutants = select(CATALOG, args.only)
    if not mutants:
        parser.error(f"--only {args.only}: no mutant's name or file matches")
    return args, mutants


def main(argv=None) -> int:
    args, mutants = parse_args(argv)
    if args.list:
        for m in mutants:
            print(f"{m.name:32} {m.path:32} {m.why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutants-") as tree:
        copy_tree(ROOT, tree)
        if not args.no_baseline:
            failures = run_baselines(mutants, tree, args.timeout)
            if failures:
                print("the tests fail without any mutant; fix them first:\n  " + "\n  ".join(failures))
                return 1
        results = []
        build = ExtensionBuild(tree)
        for i, mutant in enumerate(mutants, 1):
            result = run_mutant(mutant, tree, args.timeout, build)
            results.append(result)
            print(
                f"[{i}/{len(mutants)}] {result.verdict:14} {result.seconds:6.1f} s  {mutant.name}", flush=True
            )
    print("score per file (killed / applied):\n" + summary(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0 if all(r.verdict in ("killed", "timeout", "does not apply") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
