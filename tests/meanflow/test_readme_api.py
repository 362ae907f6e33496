"""The README's API example runs as written, on a smaller preset (the calls are the same)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_api_example_runs():
    block = re.search(r"## API\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert 'DiT.from_config("DiT-B/2"' in block
    scope = {}
    exec(compile(block.replace('"DiT-B/2"', '"DiT-T/4"'), str(README), "exec"), scope)
    assert scope["u"].shape == scope["dudt"].shape == scope["z"].shape
    assert scope["loss"].ndim == 0 and scope["model"].blocks[0].mlp.fc1.weight.grad is not None
    assert scope["images"].shape == scope["z"].shape
    assert scope["o"].shape == scope["o_dot"].shape == scope["q"].shape
