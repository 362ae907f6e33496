"""The DiT's plain forward on the CPU: the layout it keeps."""

import torch

from meanflow.models import DiT


def tiny(backend=None):
    torch.manual_seed(0)
    model = DiT.from_config("DiT-T/8", num_classes=10, in_channels=1, input_size=32, depth=2, backend=backend)
    for p in model.parameters():  # adaLN-Zero starts every block as the identity: wake them up
        torch.nn.init.normal_(p, std=0.05)
    z, t = torch.randn(5, 1, 32, 32), torch.rand(5)
    return model, (z, t * 0.5, t, torch.arange(5))


def test_the_token_stream_is_token_major():
    """The patch convolution's output is copied once into (batch, tokens, dim) order: kept in
    the convolution's channel-major order, every residual add would keep it and every
    LayerNorm would copy it again."""
    model, (z, *_) = tiny()
    x = model.x_embedder(z)
    assert x.is_contiguous()
    assert torch.equal(x, model.x_embedder.proj(z).flatten(2).transpose(1, 2))
