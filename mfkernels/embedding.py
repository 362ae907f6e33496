"""Sinusoidal time embedding, value and tangent (docs/design.md section 2).

``[cos(w t), sin(w t)]`` with DiT's frequencies ``w_i = max_period^(-i / half)``; tangent
``[-w sin(w t), w cos(w t)] t'``. Plain torch: it is a ``(batch, 256)`` elementwise op that
``torch.compile`` fuses on its own.
"""

import torch
from torch import Tensor

from . import reference
from ._checks import check_pair, check_positive_int, check_positive_number


def _check_arguments(t, dim, max_period) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 1:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"t must be a (batch,) tensor, got {got}")
    check_positive_int("dim", dim)
    check_positive_number("max_period", max_period)


def timestep_embedding(t, dim, max_period=10000.0) -> Tensor:
    """The primal alone (differentiable, transparent to ``torch.func``): ``t`` is ``(batch,)``
    (integer DiT timesteps too), the result ``(batch, dim)``."""
    _check_arguments(t, dim, max_period)
    dtype = reference.compute_dtype(t.dtype)
    freqs = reference.timestep_frequencies(dim, max_period, dtype, t.device)
    args = t.to(dtype)[:, None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:  # not zeros_like(emb[:, :1]): for dim 1 emb has no column to copy
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=-1)
    return emb


def timestep_embedding_jvp(t, t_dot, dim, max_period=10000.0) -> tuple[Tensor, Tensor]:
    """``t`` and ``t_dot`` are ``(batch,)``; returns two ``(batch, dim)`` tensors."""
    check_pair("t", t, t_dot)
    _check_arguments(t, dim, max_period)
    emb = timestep_embedding(t, dim, max_period)
    with torch.no_grad():
        emb_dot = reference.timestep_embedding_jvp(t, t_dot, dim, max_period)[1]
    return emb, emb_dot
