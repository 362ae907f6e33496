"""Device choice, process-group setup and a rank's failure shared with the others, for the
programs (``meanflow.train``, ``meanflow.generate``, ``meanflow.evaluate``,
``meanflow.prepare_latents``)."""

import os

import torch
import torch.distributed as dist


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: cuda when available, else cpu; ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as given.

    A CUDA device this process cannot use is a ``ValueError`` naming it, not torch's driver
    error from deep inside the first CUDA call.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda":
        _check_cuda_index(name, device.index or 0)
    return device


def _check_cuda_index(name: str, index: int) -> None:
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA GPU here (use 'cpu' or 'auto')")
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {name!r}: GPU {index} asked for, this machine has {count}")


def setup_distributed(device_name: str = "auto"):
    """``(rank, world_size, device)`` from torchrun's environment; one process = world of 1.

    ``device_name``: "auto" (cuda when available, else cpu), "cpu", "cuda" (this process's
    ``LOCAL_RANK`` GPU) or "cuda:N" (GPU N, honoured as given). The CUDA device becomes the
    current one; with several ranks the process group is initialised (nccl on CUDA, else gloo).
    """
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if device.index is None:
            _check_cuda_index(f"{device_name} (LOCAL_RANK {local})", local)
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


# The kinds of error the command lines tell apart (their exit status and message); another
# rank's error of one of these is raised again as that kind, with its message.
_KINDS = (FileNotFoundError, FloatingPointError, ValueError, TypeError, OSError, KeyboardInterrupt)


def together(world: int, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on this rank, then one collective: when it raised on any rank,
    every rank raises (its own error, else the first failing rank's error again, of the same
    kind and with the same message). Returns this rank's result.

    Without it, a rank that fails alone leaves the others waiting at their next collective:
    for good with NCCL, until gloo reports a lost connection (a traceback that hides the error).
    ``fn`` itself must run no collective: a rank that failed before it would never join."""
    error = None
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:  # KeyboardInterrupt too: the other ranks must not wait for us
        error = e
    if world > 1:
        outcomes = [None] * world
        dist.all_gather_object(outcomes, None if error is None else _portable(error))
        failed = next((o for o in outcomes if o is not None), None)
        if error is None and failed is not None:
            kind, message = failed
            raise {k.__name__: k for k in _KINDS}.get(kind, RuntimeError)(message)
    if error is not None:
        raise error
    return result


def on_rank0(rank: int, world: int, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on rank 0 only (files written once), its error raised on every
    rank (:func:`together`); returns its result on rank 0, None on the others."""
    return together(world, fn if rank == 0 else _nothing, *args, **kwargs)


def gather(world: int, value) -> list:
    """``value`` of every rank, on every rank (a picklable object)."""
    if world == 1:
        return [value]
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


def _nothing(*args, **kwargs):
    return None


def _portable(error: BaseException) -> tuple:
    """``(kind, message)`` of ``error``: exceptions do not all survive pickling (one whose
    ``__init__`` takes other arguments than its ``args``), their kind and message do."""
    kind = next((k for k in _KINDS if isinstance(error, k)), None)
    if kind is None:
        return "RuntimeError", f"{type(error).__name__}: {error}"
    return kind.__name__, str(error)
