"""The other libraries' attention the benchmark times: the right values, and a clear reason
where this machine cannot run one."""

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_close

from benchmarks import attention_baselines as baselines


def _inputs(seed=0, shape=(2, 3, 17, 8)):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for _ in range(4)]


def test_sdpa_flash_forward_and_backward_are_attention():
    q, k, v, grad_o = _inputs()
    scale = 0.3
    o = baselines.forward("sdpa_flash", q, k, v, scale)()
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    expected = F.scaled_dot_product_attention(qg.double(), kg.double(), vg.double(), scale=scale)
    assert_close("O", o, expected.float(), 1e-5)
    grads = baselines.backward("sdpa_flash", q, k, v, grad_o, scale)()
    expected_grads = torch.autograd.grad(expected, (qg, kg, vg), grad_o.double())
    for name, got, want in zip(("dQ", "dK", "dV"), grads, expected_grads, strict=True):
        assert_close(name, got, want.float(), 1e-5)


@pytest.mark.parametrize("provider", ["sdpa_cudnn", "flash_attn", "fa3"])
def test_gpu_only_providers_say_why_on_the_cpu(provider):
    q, k, v, grad_o = _inputs()
    with pytest.raises(baselines.Unavailable, match=f"{provider} needs a CUDA device"):
        baselines.forward(provider, q, k, v, 1.0)
    with pytest.raises(baselines.Unavailable, match=f"{provider} needs a CUDA device"):
        baselines.backward(provider, q, k, v, grad_o, 1.0)


def test_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="provider must be one of"):
        baselines.forward("flash4", *_inputs()[:3], 1.0)
