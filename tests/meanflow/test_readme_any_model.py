"""The README's "JVP through any model" example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_any_model_example_runs():
    pytest.importorskip("diffusers")
    block = re.search(r"## JVP through any model\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope = {}
    exec(compile(block, str(README), "exec"), scope)
    assert scope["loss"].ndim == 0
    assert scope["model"].transformer.pos_embed.proj.weight.grad is not None
    assert scope["out"].shape == scope["out_dot"].shape == scope["h"].shape
