"""Device choice and process-group setup shared by the programs (``meanflow.train``, ``meanflow.generate``,
``meanflow.evaluate``, ``meanflow.prepare_latents``)."""

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
