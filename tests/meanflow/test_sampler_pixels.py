"""Images in [-1, 1] become the pixels users see: -1 is 0, 1 is 255, channels last."""

import pytest
import torch

from meanflow.sampler import to_uint8


def test_to_uint8_maps_minus_one_to_one_onto_0_255():
    """Diffusers' mapping ``round((x / 2 + 0.5) 255)``, clamped; 0 is 127.5, rounded to even."""
    values = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, -3.0, 3.0])
    pixels = to_uint8(values.view(1, 1, 1, 7))
    assert pixels.dtype.name == "uint8" and pixels.shape == (1, 1, 7, 1)
    assert pixels[0, 0, :, 0].tolist() == [0, 64, 128, 191, 255, 0, 255]


def test_to_uint8_puts_channels_last():
    images = torch.zeros(2, 3, 4, 5)
    images[1, :, 2, 3] = torch.tensor([-1.0, 0.0, 1.0])
    pixels = to_uint8(images)
    assert pixels.shape == (2, 4, 5, 3)
    assert pixels[1, 2, 3].tolist() == [0, 128, 255]


def test_nan_images_are_refused_not_saved_black():
    """NaN survives ``clamp`` and was cast to 0: a diverged sample became a black image in
    the PNGs and the FID set, without an error. Infinities are clamped like any other value."""
    images = torch.zeros(3, 3, 2, 2)
    images[2, 1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"images hold NaN \(images \[2\] of 3\)"):
        to_uint8(images)
    saturated = to_uint8(torch.tensor([float("inf"), -float("inf")]).view(1, 1, 1, 2))
    assert saturated[0, 0, :, 0].tolist() == [255, 0]
