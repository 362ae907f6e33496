"""meanflow.distributed on a machine that says it has GPUs (torch.cuda's answers stood in for):
the device each name and each rank gets, the one-line errors of a device that cannot be
used, and the single-process paths of together, on_rank0 and gather."""

import pytest
import torch

from meanflow import distributed


@pytest.fixture
def gpus(monkeypatch):
    """Two GPUs, as torch.cuda reports them; the devices made current, in order."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    return current


def test_auto_is_the_gpu_where_there_is_one(gpus):
    assert distributed.resolve_device("auto") == torch.device("cuda")
    assert distributed.resolve_device("cuda") == torch.device("cuda")
    assert distributed.resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["GPU", "cuda:x", "meta", "mps"])
def test_a_device_that_is_not_cpu_or_cuda_is_a_value_error(name):
    with pytest.raises(ValueError, match=f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got '{name}'"):
        distributed.resolve_device(name)


@pytest.mark.parametrize("index", [2, 5])
def test_a_gpu_past_the_machines_is_named(gpus, index):
    with pytest.raises(ValueError, match=f"GPU {index} asked for, this machine has 2"):
        distributed.resolve_device(f"cuda:{index}")


def test_each_rank_takes_its_nodes_gpu(gpus, monkeypatch):
    """Rank 3 of 4 on two nodes of two GPUs: its GPU is LOCAL_RANK 1, made current."""
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.setup_distributed("cuda") == (3, 4, torch.device("cuda", 1))
    assert gpus == [torch.device("cuda", 1)]
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(
        ValueError, match=r"device 'cuda \(LOCAL_RANK 2\)': GPU 2 asked for, this machine has 2"
    ):
        distributed.setup_distributed("cuda")


def _fail(error):
    raise error


def test_one_process_raises_its_own_error_and_returns_its_result():
    with pytest.raises(FloatingPointError, match="loss is nan"):
        distributed.together(1, _fail, FloatingPointError("loss is nan"))
    assert distributed.together(1, divmod, 7, 2) == (3, 1)
    assert distributed.gather(1, {"a": 1}) == [{"a": 1}]


def test_on_rank0_runs_on_rank_0_only():
    ran = []
    assert distributed.on_rank0(0, 1, lambda: ran.append(0) or "written") == "written"
    assert distributed.on_rank0(1, 1, lambda: ran.append(1) or "written") is None
    assert ran == [0]
