"""tools/mutants.py on a toy repository: verdicts, "does not apply", timeouts, and the copy's
file put back after each mutant (the working tree itself is never written); a C++ mutant
compiled into a copy of the extension. Plus the
catalog's own consistency: unique names, test paths that exist, every mutant's text found once."""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import mutants  # noqa: E402
from mutant_catalog import CATALOG, Mutant  # noqa: E402

SOURCE = "def add(a, b):\n    return a + b\n"
TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


@pytest.fixture
def toy(tmp_path):
    """``(repository, copy)``: a git folder with calc.py and its test, and the tool's copy of it."""
    repo, copy = tmp_path / "repo", tmp_path / "copy"
    repo.mkdir()
    (repo / "calc.py").write_text(SOURCE)
    (repo / "test_calc.py").write_text(TEST)
    (repo / ".gitignore").write_text("ignored.txt\n")
    (repo / "ignored.txt").write_text("not copied")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    mutants.copy_tree(str(repo), str(copy))
    return repo, copy


def mutant(find, replace, name="m"):
    return Mutant(name, "calc.py", find, replace, ("test_calc.py",), "toy")


def test_copy_holds_what_git_shows(toy):
    _, copy = toy
    assert sorted(os.listdir(copy)) == [".gitignore", "calc.py", "test_calc.py"]


@pytest.mark.parametrize(
    "find, replace, verdict",
    [
        ("a + b", "a - b", "killed"),
        ("a + b", "b + a", "survived"),
        ("a + b", "a +", "killed"),
        # what the Triton interpreter does with an out-of-bounds write on some CPUs
        ("a + b", "__import__('os').abort()", "killed"),
    ],
    ids=["wrong-result", "equivalent", "does-not-import", "crashes-the-tests"],
)
def test_verdicts_and_restore(toy, find, replace, verdict):
    repo, copy = toy
    result = mutants.run_mutant(mutant(find, replace), str(copy), timeout=120)
    assert result.verdict == verdict, result.detail
    assert (copy / "calc.py").read_text() == SOURCE
    assert (repo / "calc.py").read_text() == SOURCE


@pytest.mark.parametrize("find, why", [("a * b", "is not in"), ("a", "occurs")])
def test_source_text_missing_or_ambiguous_does_not_apply(toy, find, why):
    _, copy = toy
    result = mutants.run_mutant(mutant(find, "x"), str(copy), timeout=120)
    assert result.verdict == "does not apply" and why in result.detail
    assert result.seconds == 0.0 and (copy / "calc.py").read_text() == SOURCE


def test_a_hanging_mutant_times_out_and_is_killed(toy):
    _, copy = toy
    result = mutants.run_mutant(mutant("return a + b", "while True:\n        pass"), str(copy), timeout=3)
    assert result.verdict == "timeout"
    assert (copy / "calc.py").read_text() == SOURCE


def test_summary_scores_each_file():
    results = [
        mutants.Result("a", "x.py", "killed", 1.0),
        mutants.Result("b", "x.py", "survived", 1.0, "3 passed"),
        mutants.Result("c", "x.py", "does not apply", 0.0, "moved"),
        mutants.Result("d", "y.py", "timeout", 9.0),
    ]
    text = mutants.summary(results)
    assert "x.py: 1/2 killed (1 do not apply)" in text and "y.py: 1/1 killed" in text
    assert "survived: b (x.py) 3 passed" in text and "does not apply: c (x.py) moved" in text


def test_catalog_names_are_unique_and_its_tests_exist():
    names = [m.name for m in CATALOG]
    assert len(names) == len(set(names))
    for m in CATALOG:
        assert os.path.isfile(os.path.join(ROOT, m.path)), m.name
        for test in m.tests:
            assert os.path.isfile(os.path.join(ROOT, test.split("::")[0])), f"{m.name}: {test}"


def test_every_mutant_applies_to_the_code_as_it_is():
    """A mutant whose text moved no longer plants its bug: it would count as "does not apply"
    only when the whole catalog is run, so an edit of the code names it here instead."""
    for m in CATALOG:
        with open(os.path.join(ROOT, m.path), encoding="utf-8") as f:
            found = f.read().count(m.find)
        assert found == 1, f"{m.name}: its text occurs {found} times in {m.path}: update the mutant"


def test_bad_arguments_are_one_line_errors(capsys):
    for argv, message in ((["--only", "no-such-mutant"], "no mutant"), (["--timeout", "0"], "--timeout")):
        with pytest.raises(SystemExit) as exit_info:
            mutants.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which("cmake") is None
    or importlib.util.find_spec("pybind11") is None
    or not glob.glob(os.path.join(ROOT, "mfkernels", "_C*.so")),
    reason="needs CMake, pybind11 (the test extra) and a built mfkernels._C",
)
def test_a_csrc_mutant_is_compiled_into_the_copy_and_the_extension_put_back(tmp_path):
    """The extension's sources and the built module copied; a mutant of the bindings is
    compiled (killed by a test that reads the module), one that does not compile is an error,
    and after each the copy's module is the copied one again."""
    copy = tmp_path / "copy"
    for rel in ["CMakeLists.txt", *mutants.tracked_files(ROOT)]:
        if rel.startswith(("csrc/", "mfkernels/_C")) or rel == "CMakeLists.txt":
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), copy / rel)
    api = "csrc/mfkernels_api.cpp"
    source = (copy / api).read_text()
    number = re.search(r"constexpr int kApiVersion = (\d+);", source).group(1)
    (copy / "test_api.py").write_text(
        "import sys\n\nimport torch  # noqa: F401  (the module links the OpenMP torch loaded)\n\n"
        "sys.path.insert(0, 'mfkernels')\nimport _C  # noqa: E402\n\n\n"
        f"def test_api_version():\n    assert _C.API_VERSION == {number}\n"
    )
    [module] = glob.glob(str(copy / "mfkernels" / "_C*.so"))
    copied = open(module, "rb").read()
    build = mutants.ExtensionBuild(str(copy))
    version = f"constexpr int kApiVersion = {number};"
    bumped = Mutant("v", api, version, version.replace(number, f"{int(number) + 1}"), ("test_api.py",), "+1")
    broken = Mutant("b", api, version, version.replace(number, ""), ("test_api.py",), "a syntax error")

    result = mutants.run_mutant(bumped, str(copy), timeout=600, build=build)
    assert result.verdict == "killed", result.detail
    assert open(module, "rb").read() == copied and (copy / api).read_text() == source
    result = mutants.run_mutant(broken, str(copy), timeout=600, build=build)
    assert result.verdict == "error" and "does not compile" in result.detail, result.detail
    assert open(module, "rb").read() == copied and (copy / api).read_text() == source


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs CMake")
def test_a_copy_cmake_cannot_configure_is_said_so_for_every_mutant(tmp_path):
    """Without a CMakeLists.txt in the copy each build says configure failed, never that the
    mutant does not compile (the first failure once left the build half set up)."""
    build = mutants.ExtensionBuild(str(tmp_path))
    for _ in range(2):
        assert build.build(timeout=120).startswith("CMake could not configure the copy")
