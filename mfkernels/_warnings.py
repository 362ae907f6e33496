"""Warnings attributed to the user's call: a fallback is decided several frames deep (the op,
its autograd Function, the dispatch, or torch's SDPA override), and a fixed ``stacklevel``
named one of those frames, the same line of ours for every warning."""

import os
import sys
import warnings

import torch

_OURS_AND_TORCH = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(torch.__file__) + os.sep,
)


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` at the first frame outside mfkernels and torch."""
    frame, stacklevel = sys._getframe(1), 2  # stacklevel 2 names the frame that called this
    while frame is not None and frame.f_code.co_filename.startswith(_OURS_AND_TORCH):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, category, stacklevel=stacklevel)
