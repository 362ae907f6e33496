"""A tiny feature extractor registered with torch-fidelity as ``meanflow-test-tiny``: the tests
of meanflow.evaluate (and the workflow chains) score images without Inception weights, which
meanflow.evaluate never downloads. Import this module only where torch-fidelity is installed."""

import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

TINY = "meanflow-test-tiny"


class TinyExtractor(FeatureExtractorBase):
    """4x4 average-pooled RGB -> a fixed random projection to 16 features; 10 'logits' on top.
    Takes uint8 (B, 3, H, W) like torch-fidelity's Inception."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(48, 16, generator=g) / 7)
        self.register_buffer("head", torch.randn(16, 10, generator=g))
        if feature_extractor_weights_path:  # lets a test see the path go through
            self.proj.copy_(torch.load(feature_extractor_weights_path))

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3
        feat = F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1) @ self.proj
        found = {"feat": feat, "logits": feat @ self.head}
        return tuple(found[k] for k in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return ("feat", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "feat", "kid": "feat", "prc": "feat"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


if TINY not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(TINY, TinyExtractor)
