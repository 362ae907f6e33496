"""``mfkernels.sdpa_forward_ad`` as a researcher's own model meets it: threads, gradients that
reach the fused tangent or differentiate the flash backward, and the reasons its fallbacks
name (docs/design.md section 2, "Forward-mode AD through any model's SDPA")."""

import threading

import torch
import torch.nn.functional as F

import mfkernels
from mfkernels import sdpa


def test_multihead_attention_in_two_threads_leaves_sdpa_unbound(monkeypatch):
    """``nn.MultiheadAttention`` under the switch in two threads whose calls overlap, the
    first to start finishing first: ``F.scaled_dot_product_attention`` is PyTorch's again
    afterwards (restoring per call left the second thread's copy of the first's rebinding
    in place for good), and both threads' attention ran on the switch."""
    first_in, second_in, first_done = threading.Event(), threading.Event(), threading.Event()
    seen = []
    flash_sdpa = sdpa.flash_sdpa

    def gated(*args, **kwargs):
        seen.append(threading.current_thread().name)
        if threading.current_thread().name == "first":
            first_in.set()
            second_in.wait(30)
        else:
            second_in.set()
            first_done.wait(30)
        return flash_sdpa(*args, **kwargs)

    monkeypatch.setattr(sdpa, "flash_sdpa", gated)
    attn = torch.nn.MultiheadAttention(16, 2, batch_first=True).double()
    h = torch.randn(2, 5, 16, dtype=torch.float64)
    outputs = {}

    def run(done=None):
        with mfkernels.sdpa_forward_ad("reference"), torch.no_grad():
            outputs[threading.current_thread().name] = attn(h, h, h, need_weights=False)[0]
        if done is not None:
            done.set()

    first = threading.Thread(target=run, args=(first_done,), name="first")
    second = threading.Thread(target=run, name="second")
    first.start()
    assert first_in.wait(30)
    second.start()
    first.join(60)
    second.join(60)
    try:
        assert F.scaled_dot_product_attention is sdpa._SDPA
    finally:
        F.scaled_dot_product_attention = sdpa._SDPA  # never leak a failure into later tests
    assert sorted(seen) == ["first", "second"]
    with torch.no_grad():
        expected = attn(h, h, h, need_weights=False)[0]
    assert torch.equal(outputs["first"], expected) and torch.equal(outputs["second"], expected)
