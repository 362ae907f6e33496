"""The DiT's hyper-parameters: ``DiTConfig`` and the named sizes ``PRESETS`` (the DiT paper's
XL/L/B/S plus a tiny T for MNIST). A leaf module: the model (``meanflow.models``) and the
interchange formats (``meanflow.interchange``) both build on it; it imports only the shared
argument checks (``meanflow.checks``)."""

import math
from dataclasses import dataclass, fields

from .checks import check_int_at_least

# name: (depth, hidden_size, patch_size, num_heads), DiT paper sizes plus a tiny one for MNIST.
PRESETS = {
    f"DiT-{size}/{patch}": (depth, hidden, patch, heads)
    for size, (depth, hidden, heads) in {
        "XL": (28, 1152, 16),
        "L": (24, 1024, 16),
        "B": (12, 768, 12),
        "S": (12, 384, 6),
        "T": (6, 256, 4),
    }.items()
    for patch in (2, 4, 8)
}

TIME_CONDS = ("t,h", "r,t")


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


@dataclass
class DiTConfig:
    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    time_cond: str = "t,h"
    qk_norm: bool = False
    # Times in [0, 1] are multiplied by this before the sinusoid, as DiT's embedder expects
    # timesteps in [0, 1000]; without it the embedding barely varies over [0, 1].
    time_scale: float = 1000.0
    frequency_embedding_size: int = 256

    def __post_init__(self):
        for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads",
                     "frequency_embedding_size"):  # fmt: skip
            check_int_at_least(name, getattr(self, name))
        if not _finite_positive(self.mlp_ratio) or int(self.hidden_size * self.mlp_ratio) < 1:
            raise ValueError(
                f"mlp_ratio must be a finite number giving an MLP of at least 1 unit, got {self.mlp_ratio!r}"
            )
        if not _finite_positive(self.time_scale):
            raise ValueError(f"time_scale must be a finite number > 0, got {self.time_scale!r}")
        # A string such as "false" would be truthy and switch qk-norm on.
        if not isinstance(self.qk_norm, bool):
            raise ValueError(f"qk_norm must be True or False, got {self.qk_norm!r}")
        check_int_at_least("num_classes", self.num_classes, 0, " (0: unconditional)")
        if self.time_cond not in TIME_CONDS:
            raise ValueError(f"time_cond must be one of {TIME_CONDS}, got {self.time_cond!r}")
        if self.input_size % self.patch_size:
            raise ValueError(
                f"input_size {self.input_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.hidden_size % 4:  # a sin and a cos per axis of the 2-D positions
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of 4 (2-D sin-cos positions)")

    @classmethod
    def from_name(cls, name: str, **overrides) -> "DiTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; choose one of {sorted(PRESETS)}")
        depth, hidden, patch, heads = PRESETS[name]
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown DiTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        base = dict(depth=depth, hidden_size=hidden, patch_size=patch, num_heads=heads)
        return cls(**{**base, **overrides})
