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


def test_any_model_trainer_command_parses():
    """The section's trainer command is a valid config (test_train_adapters.py trains such runs)."""
    import shlex

    from meanflow.config import parse_args

    pytest.importorskip("timm")
    section = re.search(r"## JVP through any model\n(.*?)\n## ", README.read_text(), re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "meanflow.train"]
    config = parse_args(argv[3:])
    assert config.model_class == "timm.VisionTransformer" and config.model_kwargs["embed_dim"] == 192
