import pytest
import torch

from meanflow.models import DiT, DiTConfig


def make_tiny(num_classes=5, time_cond="t,h", seed=0, **kw):
    """A 2-block DiT on 1x8x8 inputs with randomised weights: adaLN-Zero would make a fresh
    model output exactly zero, which hides every bug."""
    torch.manual_seed(seed)
    cfg = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2)
    model = DiT(DiTConfig(**{**cfg, **kw}, num_classes=num_classes, time_cond=time_cond))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def tiny():
    return make_tiny
