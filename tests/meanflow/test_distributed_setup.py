"""meanflow.distributed: a rank's place from torchrun's environment, the process group's
backend, and a failure on one rank raised on the others as the same kind of error."""

import pytest
import torch

from meanflow import distributed
from meanflow.data.image_folder import ImageReadError


@pytest.fixture
def no_group(monkeypatch):
    """torch.distributed's group calls recorded instead of made (the environment is a fake)."""
    made = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(made))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: made.append(backend))
    return made


def test_the_rank_is_the_global_rank_not_the_local_one(monkeypatch, no_group):
    """The second node of two with 4 GPUs each: global rank 5 is GPU 1 there. Taken from
    LOCAL_RANK, ranks 1 and 5 would read the same shard of every batch."""
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.setup_distributed("cpu") == (5, 8, torch.device("cpu"))
    assert no_group == ["gloo"]  # NCCL needs GPUs: a CPU group is gloo
    distributed.setup_distributed("cpu")
    assert no_group == ["gloo"]  # a group already set up is not set up again


def test_one_process_sets_up_no_group(monkeypatch, no_group):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.setup_distributed("cpu") == (0, 1, torch.device("cpu"))
    assert no_group == []


def test_an_error_keeps_its_kind_across_ranks():
    """What another rank raises again: the most precise of the kinds the CLIs tell apart."""
    assert distributed._portable(FileNotFoundError("lost.jpg")) == ("FileNotFoundError", "lost.jpg")
    assert distributed._portable(PermissionError("read-only")) == ("OSError", "read-only")
    assert distributed._portable(ImageReadError("3 failed")) == ("ValueError", "3 failed")
    assert distributed._portable(FloatingPointError("nan loss")) == ("FloatingPointError", "nan loss")
    assert distributed._portable(KeyboardInterrupt()) == ("KeyboardInterrupt", "")
    assert distributed._portable(KeyError("step")) == ("RuntimeError", "KeyError: 'step'")


def _fail_on_rank1(rank, errors):
    """Each of ``errors`` raised on rank 1 inside together(); what every rank raised."""
    assert distributed.setup_distributed("cpu")[:2] == (rank, 2)
    seen = []
    for kind, message in errors:
        error = {"FileNotFoundError": FileNotFoundError, "KeyboardInterrupt": KeyboardInterrupt}[kind]

        def work(error=error, message=message):
            if rank == 1:
                raise error(message)
            return "fine"

        try:
            distributed.together(2, work)
            seen.append(None)
        except BaseException as e:
            seen.append([type(e).__name__, str(e)])
    return seen


def test_a_failure_on_one_rank_is_raised_on_every_rank(tmp_path):
    """A missing file on rank 1, then Ctrl-C there: rank 0 raises the same kind and message
    instead of waiting at its next collective."""
    from faults.test_fault_ranks import run_ranks

    errors = [["FileNotFoundError", "no such file: a/img_5.jpg"], ["KeyboardInterrupt", "stop"]]
    outcomes = run_ranks(tmp_path, _fail_on_rank1, errors)
    assert [o.get("returned") for o in outcomes] == [errors, errors], outcomes
