"""One mutant of the catalog (``tools/mutant_catalog.py``): a one-line bug and its tests."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    find: str
    replace: str
    tests: tuple[str, ...]  # pytest arguments: files or node ids, the fastest first (-x stops at a kill)
    why: str  # the bug it stands for
