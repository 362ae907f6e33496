"""Output layouts that an op's fake implementation (``ops.py``) and its kernels share: a
compiled graph assumes the fake's strides, so every backend must give the same."""

from torch import Tensor


def attention_output(batch, heads, seq, head_dim, like: Tensor) -> Tensor:
    """A ``(batch, heads, seq, head_dim)`` output laid out as ``(batch, seq, heads, head_dim)``,
    as flash attention writes it: merging the heads back into ``(batch, seq, heads * head_dim)``
    for the output projection is then a view, not a copy of O and of O'."""
    return like.new_empty((batch, seq, heads, head_dim)).transpose(1, 2)
