"""Device choice and process-group setup shared by the programs (``meanflow.train``, ``meanflow.sample``,
``meanflow.evaluate``, ``meanflow.prepare_latents``)."""

import os

import torch
import torch.distributed as dist


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: cuda when available, else cpu; any other name as given."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


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
        device = torch.device("cuda", local if device.index is None else device.index)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device
