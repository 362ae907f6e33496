"""The primal attention of other libraries, forward and backward: the speeds the attention JVP
and our backward are judged against (``benchmarks/attention_jvp.py``).

  sdpa_flash   ``F.scaled_dot_product_attention`` on its flash backend (FlashAttention-2 in torch)
  sdpa_cudnn   the same on its cuDNN backend (a GPU only)
  flash_attn   the ``flash_attn`` package (FlashAttention-2), when installed (a GPU only)
  fa3          FlashAttention-3's ``flash_attn_interface`` (Hopper), when installed

:func:`forward` and :func:`backward` give a no-argument callable that runs one call, or raise
:class:`Unavailable` with the reason a row is skipped. Inputs are ``(batch, heads, N, d)``, as
SDPA takes them; the flash-attn packages get ``(batch, N, heads, d)`` copies made beforehand.
"""

import importlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

PROVIDERS = ("sdpa_flash", "sdpa_cudnn", "flash_attn", "fa3")
_SDPA_BACKENDS = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}
_PACKAGES = {"flash_attn": "flash_attn", "fa3": "flash_attn_interface"}


class Unavailable(Exception):
    """This machine cannot run the provider: the message says why."""


def _package_attention(provider: str):
    """The installed package's ``flash_attn_func``; Unavailable when it cannot be imported."""
    try:
        return importlib.import_module(_PACKAGES[provider]).flash_attn_func
    except Exception as exc:  # not installed, or built for another torch
        raise Unavailable(f"{_PACKAGES[provider]} not installed ({type(exc).__name__})") from None


def _primal(provider: str, device: torch.device, scale: float):
    """``(attention(q, k, v) -> O, layout)``: layout converts a ``(batch, heads, N, d)`` tensor
    to the one the provider takes."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if provider != "sdpa_flash" and device.type != "cuda":
        raise Unavailable(f"{provider} needs a CUDA device")
    if provider in _SDPA_BACKENDS:
        backend = _SDPA_BACKENDS[provider]

        def sdpa(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, scale=scale)

        return sdpa, lambda t: t
    flash_attn_func = _package_attention(provider)

    def packaged(q, k, v):
        out = flash_attn_func(q, k, v, softmax_scale=scale)
        return out[0] if isinstance(out, tuple) else out  # some FA3 versions also return the LSE

    return packaged, lambda t: t.transpose(1, 2).contiguous()


def forward(provider: str, q, k, v, scale: float):
    """One primal forward call of ``provider``, without autograd."""
    attention, layout = _primal(provider, q.device, scale)
    q, k, v = map(layout, (q, k, v))

    def call():
        with torch.no_grad():
            return attention(q, k, v)

    return call


def backward(provider: str, q, k, v, grad_o, scale: float):
    """One primal backward call of ``provider`` (``dO -> dQ, dK, dV``), from a forward run once
    here, outside the timed call."""
    attention, layout = _primal(provider, q.device, scale)
    inputs = tuple(layout(t).detach().requires_grad_() for t in (q, k, v))
    grad_o = layout(grad_o)
    o = attention(*inputs)

    def call():
        return torch.autograd.grad(o, inputs, grad_o, retain_graph=True)

    return call
