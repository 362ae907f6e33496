"""MeanFlow one-step generative models on the dual (value, tangent) engine of ``mfkernels``."""

from .models import PRESETS, DiT, DiTConfig

__all__ = ["PRESETS", "DiT", "DiTConfig"]
