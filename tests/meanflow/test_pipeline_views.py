"""MeanFlowPipeline's transformer is a view of the caller's DiT: the same weights, but its own
hooks and mode, so that diffusers' hooks on the pipeline's component (offload, progress) never
run when the caller uses the DiT itself."""

import torch

from meanflow import MeanFlowPipeline


def test_hooks_on_the_pipelines_transformer_stay_off_the_callers_model(tiny):
    model = tiny(in_channels=3)
    pipe = MeanFlowPipeline(model)
    calls = []
    pipe.transformer.register_forward_hook(lambda module, args, out: calls.append(type(module).__name__))
    z, t = torch.randn(1, 3, 8, 8), torch.ones(1)
    with torch.no_grad():
        model(z, t * 0, t, torch.zeros(1, dtype=torch.long))
        assert calls == []
        pipe.transformer(z, t * 0, t, torch.zeros(1, dtype=torch.long))
    assert calls == ["MeanFlowTransformer2DModel"]
    model.train()
    assert not pipe.transformer.training  # its own mode: the pipeline samples in eval mode
