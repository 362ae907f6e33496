"""Every command and flag the README shows is one its program takes.

Nothing runs: each program's argparse parser is caught as its ``main`` is about to parse, and
the README's arguments are parsed with it (the trainer's config is built and validated from
them). A renamed or dropped flag, program or config key fails here, not in a reader's shell.
"""

import argparse
import importlib
import importlib.util
import inspect
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PLACEHOLDER = re.compile(r"[A-Z]+|<[^>]*>")  # PATH, N, DIR: a value the reader chooses


class Caught(Exception):
    def __init__(self, parser):
        self.parser = parser


def readme_commands() -> list:
    """Argument lists of the README's commands: the lines of its bash blocks (continuations
    joined, ``&&`` chains split, comments dropped) and its inline ``python ...`` spans."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words:
                    commands.append(words)
    for span in re.findall(r"`(python\s[^`]*)`", README):
        if "\n\n" not in span and "import" not in span:
            commands.append(shlex.split(span))
    return commands


def program(words: list) -> tuple:
    """``(program, its arguments)`` of a ``python [-m] ...`` or ``torchrun ...`` command."""
    while re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # TRITON_INTERPRET=1 python ...
        words = words[1:]
    if words[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(words[1:])  # -m or a script: training_script
        return args.training_script, args.training_script_args
    assert words[0] == "python", words
    if words[1] == "-m":
        return words[2], words[3:]
    return words[1], words[2:]


def catch_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``name``'s ``main`` builds (a module, or a script's path from the root; a
    ``main`` without parameters reads ``sys.argv`` itself)."""
    if name.endswith(".py"):
        path = ROOT / name
        assert path.is_file(), f"the README runs {name}, which does not exist"
        monkeypatch.syspath_prepend(str(path.parent))
        monkeypatch.syspath_prepend(str(ROOT))
        spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(name)

    def caught(self, *args, **kwargs):
        raise Caught(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", caught)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", caught)
    with pytest.raises(Caught) as info:
        module.main([]) if inspect.signature(module.main).parameters else module.main()
    monkeypatch.undo()
    return info.value.parser


def options(parser: argparse.ArgumentParser) -> set:
    return {s for action in parser._actions for s in action.option_strings}


def parse(parser: argparse.ArgumentParser, args: list, what: str, where: str = "the README's"):
    """``args`` parsed by ``parser``; flags named alone (no values) need only exist."""
    if args and all(arg.startswith("-") for arg in args):
        unknown = set(args) - options(parser)
        assert not unknown, f"{where} {what}: {sorted(unknown)} unknown to the program"
        return None

    def error(message):
        raise AssertionError(f"{where} {what}: {message}")

    parser.error = error
    parser.allow_abbrev = False  # a flag must be spelt out, as the program names it
    return parser.parse_args(args)


def is_trainer(name: str) -> bool:
    return name in ("meanflow.train", "meanflow/train.py")


def test_every_command_parses(monkeypatch, tmp_path):
    from meanflow.config import parse_args as train_args

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("steps: 100\n")  # the --config file a command names
    pyproject = (ROOT / "pyproject.toml").read_text()
    table = re.search(r"\[project\.optional-dependencies\]\n(.*?)\n\[", pyproject, re.S).group(1)
    extras = re.findall(r"^(\w+) =", table, re.M)
    seen = set()
    for words in readme_commands():
        if words[0] == "pip":
            for extra in re.findall(r"\.\[(\w+)\]", " ".join(words)):
                assert extra in extras, f"README installs the extra [{extra}]: pyproject has {sorted(extras)}"
            continue
        if words[0] == "bash":
            assert (ROOT / words[1]).is_file(), words
            continue
        name, args = program(words)
        seen.add(name)
        what = " ".join(words)
        if name == "pytest" or "--help" in args:
            continue
        if is_trainer(name):
            train_args(args)
        else:
            parser = catch_parser(name, monkeypatch)
            if args or f"`{what}`" not in README:  # not a program named inline, without arguments
                parse(parser, args, what)
    assert {"meanflow.train", "meanflow.generate", "meanflow.evaluate", "meanflow.export"} <= seen


# Flags the README's prose names for a program, as the README shows them.
PROSE_FLAGS = [
    ("meanflow.eval_mnist", "`--data DIR`"),
    ("meanflow.evaluate", "`--inception-weights`"),
    ("meanflow.evaluate", "`--allow-unverified-weights`"),
    ("meanflow.evaluate", "`--save-ref-stats`"),
    ("benchmarks/triton_static.py", "`--arch 80`"),
    ("benchmarks/jvp_throughput.py", "`--quick`"),
    ("benchmarks/jvp_throughput.py", "`jvp_throughput.py --compile-mode cudagraphs`"),
    ("benchmarks/jvp_throughput.py", "`jvp_throughput.py --cfg-w 1 --cfg-k 0.5`"),
    ("tools/mutants.py", "`--list`"),
    ("tools/mutants.py", "`python tools/mutants.py --only loss.py`"),
]


@pytest.mark.parametrize("name, text", PROSE_FLAGS, ids=[" ".join(p) for p in PROSE_FLAGS])
def test_prose_flags_are_the_programs(monkeypatch, name, text):
    assert text in README, f"the README no longer shows {text}: update PROSE_FLAGS"
    args = [word for word in text.strip("`").split() if word != "python" and not word.endswith(".py")]
    parse(catch_parser(name, monkeypatch), args, text)


def test_every_trainer_key_the_docs_name_is_one(tmp_path):
    """``--key value`` spans in the README and docs/ with a trainer key (``_`` or ``.`` in it):
    the key exists, and a value given (not a placeholder such as PATH or N) is valid."""
    from meanflow.config import TrainConfig, parse_args
    from meanflow.config_overrides import config_keys

    keys = set(config_keys(TrainConfig.from_name("mnist"))) | {"preset", "config", "help"}
    texts = [README] + [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    spans = {s for text in texts for s in re.findall(r"`(--[a-z][\w.]*(?: [^`-][^`]*)?)`", text)}
    checked = 0
    for span in sorted(spans):
        key, _, value = span[2:].partition(" ")
        if "_" not in key and "." not in key and key not in keys:
            continue  # another program's flag (hyphenated), checked above
        if key.split(".")[0] == "model_kwargs":
            continue  # a library's own constructor keywords
        assert key in keys, f"the docs name --{key}, which is no trainer key"
        if value and not PLACEHOLDER.fullmatch(value) and "|" not in value:
            parse_args(["--out_dir", str(tmp_path), f"--{key}", value])
        checked += 1
    assert checked >= 15


def test_resume_rules_are_the_run_identity():
    """The keys the README says a resume may change, and those it refuses, are the trainer's
    (``meanflow.run_identity.RUN_IDENTITY``)."""
    from meanflow.config import TrainConfig
    from meanflow.config_overrides import config_keys
    from meanflow.run_identity import RUN_IDENTITY

    text = " ".join(README.split())
    may = re.search(r"A resume may change (.*?); a checkpoint saved with another", text).group(1)
    refused = re.search(r"a checkpoint saved with another (.*?) is refused with the key named", text).group(1)
    changeable = set(re.findall(r"`([\w.]+)`", may))
    named = set(re.findall(r"`([\w.]+)`", refused)) | ({"loss"} if re.search(r"\bloss\b", refused) else set())
    assert named == set(RUN_IDENTITY)
    assert changeable and changeable <= set(config_keys(TrainConfig())) - set(RUN_IDENTITY)
