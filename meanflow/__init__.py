"""MeanFlow one-step generative models on the dual (value, tangent) engine of ``mfkernels``."""

from .loss import FlowMatchingLoss, LossModule, MeanFlowLoss
from .models import PRESETS, DiT, DiTConfig
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
