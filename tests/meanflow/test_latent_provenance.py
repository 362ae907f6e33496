"""Where latents come from: the DALI reader's ADM crop against PIL's, the VAE and the reader
recorded in the manifest and checked, and the loader's one-line summary."""

import os

import numpy as np
import pytest
import torch

from meanflow.data.dali_images import dali_available
from meanflow.data.image_folder import load_image
from meanflow.data.synthetic import synthetic_image

_ci = bool(os.environ.get("CI"))
needs_dali = pytest.mark.skipif(
    not dali_available() and not _ci, reason="nvidia-dali-cuda130 is not installed"
)

SIZE = 32


def write_pngs(folder, sides, noise=20.0):
    """Lossless noisy images, so only the resize and crop can differ between the readers."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for h, w in sides:
        path = os.path.join(folder, f"{h}x{w}.png")
        Image.fromarray(synthetic_image(h, w, rng, noise)).save(path)
        paths.append(path)
    return paths


def dali_vs_pil_levels(paths, size):
    """Per image ``(max, mean)`` absolute difference of the DALI and the PIL crops, in uint8 levels."""
    from meanflow.data.dali_images import iterate_files

    got = torch.cat([x for x, ok in iterate_files(paths, size, 4, num_threads=1)])
    want = torch.stack([load_image(p, size) for p in paths])
    diff = (got - want).abs() * 127.5
    return diff.amax(dim=(1, 2, 3)), diff.mean(dim=(1, 2, 3))


@needs_dali
def test_dali_crop_is_adms_where_the_halvings_are_even(tmp_path):
    """Upscaled, plain cubic, and one or two BOX halvings at even sides: PIL's steps and
    rounding, so the crops agree up to coefficient rounding (a single antialiased cubic
    resize was 3-9 levels off at most and 0.6-1.7 on average)."""
    paths = write_pngs(str(tmp_path), [(24, 40), (50, 70), (130, 100), (200, 300)])
    worst, mean = dali_vs_pil_levels(paths, SIZE)
    assert worst.max() <= 3 and mean.max() < 0.1, (worst, mean)


@needs_dali
def test_dali_crop_near_adms_at_odd_halvings(tmp_path):
    """An odd side's BOX halving is approximated (dali_images' docstring): a few levels."""
    paths = write_pngs(str(tmp_path), [(97, 150), (389, 517)])
    worst, mean = dali_vs_pil_levels(paths, SIZE)
    assert worst.max() <= 8 and mean.max() < 1.5, (worst, mean)
