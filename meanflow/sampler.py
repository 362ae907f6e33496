"""MeanFlow sampling (docs/design.md section 1): one network call per step, no CFG second pass.

1 step: ``x = e - u(e, r=0, t=1)``. ``k`` steps on the uniform grid ``1 = t_0 > ... > t_k = 0``:
``z_r = z_t - (t - r) u(z_t, r, t)``. Guidance was folded into ``u`` at training time.
"""

import numpy as np
import torch

from .checks import check_int_at_least
from .models import check_class_labels, check_model_dtype


@torch.no_grad()
def sample(model, y, steps: int = 1, generator=None, noise=None):
    """Images ``(B, C, H, W)`` for labels ``y`` (long ``(B,)``; ``None`` for an unconditional
    model), from ``noise`` or ``N(0, I)`` drawn with ``generator`` (in float32, then cast to
    the model's dtype: one seed, one noise, in any dtype). Pass EMA weights as
    ``model`` for the usual samples; the model runs in eval mode and gets its mode back."""
    check_int_at_least("steps", steps)
    cfg = model.config
    param = next(model.parameters())
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dim() != 1:
            raise TypeError("y must be a (batch,) tensor of class labels or None")
        if cfg.num_classes and not y.is_floating_point():  # the forward checks CPU labels only
            check_class_labels(y, cfg.num_classes)
        batch, device = y.shape[0], y.device
    elif noise is not None:
        batch, device = noise.shape[0], noise.device
    else:
        raise ValueError("give labels y or noise: the batch size comes from one of them")
    shape = (batch, cfg.in_channels, cfg.input_size, cfg.input_size)
    if noise is None:
        # Drawn in float32 whatever the model's dtype, as the pipeline and meanflow.generate draw
        # it: randn draws another sequence per dtype, so a float64 (or bf16) model would get
        # unrelated noise for the same seed, not the float32 run's noise at its precision.
        noise = torch.randn(shape, generator=generator, device=device).to(param.dtype)
    elif not isinstance(noise, torch.Tensor) or tuple(noise.shape) != shape:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of shape {shape}, got {got}")
    else:
        check_model_dtype("noise", noise, param.dtype)
    # The loss's time dtype (docs/design.md section 1): float32 times would cap a float64
    # model's samples at float32 accuracy.
    time_dtype = torch.promote_types(noise.dtype, torch.float32)
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    was_training = model.training
    model.eval()
    try:
        z = noise
        for t, r in zip(grid[:-1], grid[1:]):
            r_, t_ = (torch.full((batch,), s, dtype=time_dtype, device=device) for s in (r, t))
            z = z - (t - r) * model(z, r_, t_, y).to(z.dtype)
    finally:  # also after an error: the caller may go on training the model it passed
        model.train(was_training)
    return z


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` in ``[-1, 1]`` -> ``(B, H, W, C)`` uint8, diffusers' rounding. NaN (a
    model that diverged or overflowed in 16 bits) is a ``ValueError``: ``clamp`` keeps NaN and
    its cast to uint8 is undefined (0 here: black pixels an FID set would take as images)."""
    nan = torch.isnan(images)
    if nan.any():
        bad = nan.flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"images hold NaN (images {bad[:10]} of {images.shape[0]}): nothing to save")
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_pil(array: np.ndarray):
    """``(H, W, C)`` uint8 -> a PIL image (mode ``L`` for one channel)."""
    from PIL import Image

    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_png(path: str, array: np.ndarray, durable: bool = True):
    """``(H, W, C)`` uint8 -> the PNG ``path``, written atomically (``durable``: as in
    :func:`meanflow.checkpoint.atomic_write`)."""
    from .checkpoint import atomic_write

    image = to_pil(array)
    atomic_write(path, lambda f: image.save(f, format="PNG"), durable=durable)


def save_grid(images: torch.Tensor, path: str, nrow: int = 10):
    """``(B, C, H, W)`` in [-1, 1] -> one PNG, ``nrow`` images per row, 2-pixel gaps."""
    x = to_uint8(images)
    b, h, w, c = x.shape
    rows = (b + nrow - 1) // nrow
    grid = np.zeros((rows * (h + 2) + 2, nrow * (w + 2) + 2, c), dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = x[i]
    save_png(path, grid)


def main(argv=None):
    """python -m meanflow.sampler runs/mnist/last.pt --steps 1 --out samples.png
    python -m meanflow.sampler runs/in256/last.pt --vae /models/sd-vae-ft-ema --per-class 2"""
    import argparse

    from .checkpoint import refuse_directory
    from .cli import add_weights_options, errors_as_one_line, int_at_least
    from .data.latents import load_vae_for_checkpoint
    from .distributed import resolve_device
    from .pretrained import load_trainer_checkpoint

    parser = argparse.ArgumentParser(
        prog="python -m meanflow.sampler",
        allow_abbrev=False,
        description="Sample a grid (10 per class) from a trainer checkpoint.",
    )
    parser.add_argument("checkpoint", help="a trainer checkpoint (.pt)")
    parser.add_argument(
        "--steps",
        type=int_at_least(1),
        default=1,
        help="network evaluations per image (1 = one step; default: 1)",
    )
    parser.add_argument(
        "--per-class",
        type=int_at_least(1),
        default=10,
        help="images per class, one column per class (default: 10)",
    )
    parser.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="seed of the noise, drawn on the CPU: one grid on any device (default: 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=64,
        help="images sampled (and decoded) at a time; the grid is the same for any (default: 64)",
    )
    add_weights_options(parser)
    parser.add_argument(
        "--vae",
        help="latent models: the VAE that decodes their latents (a local diffusers AutoencoderKL "
        "folder or weights file; default: none, for a pixel model)",
    )
    parser.add_argument("--out", default="samples.png", help="the PNG to write (default: samples.png)")
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (the default: cuda when available, else cpu), cpu, cuda or cuda:N",
    )
    args = parser.parse_args(argv)
    try:  # before the model is loaded and sampled
        refuse_directory(args.out)
    except ValueError as e:
        parser.error(f"argument --out: {e}")
    with errors_as_one_line(parser):
        device = resolve_device(args.device)
        model = load_trainer_checkpoint(args.checkpoint, ema=None if args.raw else args.ema, device=device)
        cfg = model.config
        # Without it a latent model's 4 scaled latent channels were saved as an RGBA PNG: colours
        # and alpha that looked like an image of an untrained model.
        decoder = load_vae_for_checkpoint(cfg, args.checkpoint, args.vae, device=device)
        n = (cfg.num_classes or 10) * args.per_class
        g = torch.Generator().manual_seed(args.seed)
        noise = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
        from .vae import decode_latents

        # In batches: an ImageNet grid is 10,000 images, too many to sample or decode at once.
        dtype, parts = next(model.parameters()).dtype, []
        for start in range(0, n, args.batch_size):
            part = noise[start : start + args.batch_size].to(device, dtype)
            rows = torch.arange(start, start + part.shape[0], device=device)
            part = sample(
                model, rows % cfg.num_classes if cfg.num_classes else None, steps=args.steps, noise=part
            )
            if decoder is not None:
                part = decode_latents(decoder, part)  # the VAE config's scale and shift, as in the pipeline
            parts.append(part.float().cpu())
        images = torch.cat(parts)
        save_grid(images, args.out, nrow=cfg.num_classes or 10)
    print(f"wrote {args.out}: {images.shape[0]} samples, {args.steps} NFE")


if __name__ == "__main__":
    main()
