"""benchmarks/gpu_validate.sh runs only on a lent GPU machine, minutes at a time: what would
fail there from a mistake in the script itself fails here instead. Its syntax, every test file
and test it names (pytest stops on a missing path before running any test), every benchmark
it runs, and every flag it passes, parsed by that benchmark's own parser."""

import re
import shlex
import subprocess
from pathlib import Path

from test_readme_commands import catch_parser, parse

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_validate.sh"
TEXT = SCRIPT.read_text()


def test_the_script_parses_as_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_test_path_it_names_exists():
    paths = set(re.findall(r"\btests/[\w/]+\.py(?:::\w+)?", TEXT))
    assert "tests/meanflow/test_train_step.py" in paths and any("::" in p for p in paths)
    for path in paths:
        file, _, test = path.partition("::")
        assert (ROOT / file).is_file(), f"gpu_validate.sh names {file}, which does not exist"
        if test:
            assert re.search(rf"^def {test}\(", (ROOT / file).read_text(), re.M), f"no {test} in {file}"


def benchmark_commands() -> list:
    """``(script, arguments)`` of every benchmark the script runs, continuations joined, shell
    values replaced by what they expand to there (a number of seconds, the results folder);
    a command that takes ``--quick`` from ``$QFLAG`` is listed with it and without it."""
    text = TEXT.replace("\\\n", " ")
    text = re.sub(r"\$\(\([^)]*\)\)", "60", text)  # $((b - 20)): seconds
    text = text.replace('"$DIR', '"/results')
    commands = []
    for line in text.splitlines():
        match = re.search(r'"?\$PY"? (benchmarks/[\w/]+\.py)(.*)', line)
        if not match or line.lstrip().startswith("#"):
            continue
        script, rest = match.groups()
        rest = rest.split(">")[0].split("||")[0]  # redirections and fallbacks are the shell's
        quick = '${QFLAG[@]+"${QFLAG[@]}"}'
        variants = [rest.replace(quick, ""), rest.replace(quick, "--quick")] if quick in rest else [rest]
        commands += [(script, shlex.split(v)) for v in variants]
    return commands


def test_every_benchmark_it_runs_takes_the_flags_it_passes(monkeypatch):
    commands = benchmark_commands()
    scripts = {script for script, _ in commands}
    assert {"benchmarks/jvp_throughput.py", "benchmarks/scripts/ragged_tile_repro.py"} <= scripts
    assert "benchmarks/render_readme.py" in scripts
    for script, args in commands:
        assert (ROOT / script).is_file(), f"gpu_validate.sh runs {script}, which does not exist"
        parser = catch_parser(script, monkeypatch)
        parser.prog = script
        parse(parser, args, f"{script} {shlex.join(args)}", where="gpu_validate.sh's")
