"""The README's API example runs as written, on a smaller preset (the calls are the same)."""

import re
from pathlib import Path

import pytest

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


def test_pipeline_example_runs(tmp_path, monkeypatch, tiny):
    """The README's MeanFlowPipeline example, on a tiny 1000-class export whose labels hold the
    names the example uses (an ImageNet export's: readable name, synset)."""
    pytest.importorskip("diffusers")
    import sys

    import diffusers.utils.dynamic_modules_utils as dynamic

    from meanflow import MeanFlowPipeline

    block = re.search(r"```python\n(import diffusers.*?MeanFlowPipeline.*?)```", README.read_text(), re.S)
    block = block.group(1)
    id2label = {i: f"class {i}" for i in range(1000)}
    id2label.update({0: "tench, n01440764", 1: "goldfish, n01443537", 207: "golden retriever"})
    MeanFlowPipeline(tiny(num_classes=1000), id2label=id2label).save_pretrained(str(tmp_path / "pipe"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # diffusers appends its modules cache
    scope = {}
    exec(compile(block, str(README), "exec"), scope)
    assert len(scope["images"]) == 3
    assert type(scope["pipe"]).__name__ == "MeanFlowPipeline"
