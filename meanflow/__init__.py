"""MeanFlow one-step generative models on the dual (value, tangent) engine of ``mfkernels``."""

from typing import TYPE_CHECKING

from .loss import FlowMatchingLoss, LossModule, MeanFlowLoss
from .models import PRESETS, DiT, DiTConfig

if TYPE_CHECKING:
    from .pipeline import MeanFlowPipeline
    from .sampler import sample

__all__ = [
    "PRESETS",
    "DiT",
    "DiTConfig",
    "FlowMatchingLoss",
    "LossModule",
    "MeanFlowLoss",
    "MeanFlowPipeline",
    "sample",
]


def __getattr__(name):
    # Loaded on first use: `python -m meanflow.sampler` then runs a module the package has not
    # imported yet (runpy warns of "unpredictable behaviour" otherwise).
    if name == "sample":
        from .sampler import sample

        return sample
    if name == "MeanFlowPipeline":
        from .pipeline import MeanFlowPipeline

        return MeanFlowPipeline
    raise AttributeError(f"module 'meanflow' has no attribute {name!r}")
