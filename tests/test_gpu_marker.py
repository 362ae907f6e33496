"""tests/conftest.py skips the gpu-marked tests on a machine without a GPU, and only them."""

import pytest
import torch
from conftest import pytest_collection_modifyitems


class Item:
    """What the hook reads of a collected test: its markers and keywords (parameter ids too)."""

    def __init__(self, markers, keywords):
        self.markers, self.keywords = list(markers), set(keywords)

    def get_closest_marker(self, name):
        return next((m for m in self.markers if m.name == name), None)

    def add_marker(self, marker):
        self.markers.append(marker.mark)


def test_only_gpu_marked_tests_are_skipped_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    marked = Item([pytest.mark.gpu.mark], ["test_bf16", "gpu"])
    param_id = Item([], ["test_devices[gpu]", "gpu"])  # a CPU test parametrised with the id "gpu"
    pytest_collection_modifyitems(None, [marked, param_id])
    assert [m.name for m in marked.markers] == ["gpu", "skip"]
    assert param_id.markers == []
