"""MeanFlow sampling (SPEC.md section 1): one network call per step, no CFG second pass.

1 step: ``x = e - u(e, r=0, t=1)``. ``k`` steps on the uniform grid ``1 = t_0 > ... > t_k = 0``:
``z_r = z_t - (t - r) u(z_t, r, t)``. Guidance was folded into ``u`` at training time.
"""

import torch


@torch.no_grad()
def sample(model, y, steps: int = 1, generator=None, noise=None):
    """Images ``(B, C, H, W)`` for labels ``y`` (long ``(B,)``; ``None`` for an unconditional
    model), from ``noise`` or ``N(0, I)`` drawn with ``generator``. Pass EMA weights as
    ``model`` for the usual samples; the model runs in eval mode and gets its mode back."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    cfg = model.config
    param = next(model.parameters())
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dim() != 1:
            raise TypeError("y must be a (batch,) tensor of class labels or None")
        batch, device = y.shape[0], y.device
    elif noise is not None:
        batch, device = noise.shape[0], noise.device
    else:
        raise ValueError("give labels y or noise: the batch size comes from one of them")
    shape = (batch, cfg.in_channels, cfg.input_size, cfg.input_size)
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=device, dtype=param.dtype)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
    was_training = model.training
    model.eval()
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    z = noise
    for t, r in zip(grid[:-1], grid[1:]):
        u = model(z, torch.full((batch,), r, device=device), torch.full((batch,), t, device=device), y)
        z = z - (t - r) * u.to(z.dtype)
    model.train(was_training)
    return z
