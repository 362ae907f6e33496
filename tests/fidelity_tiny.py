"""A tiny feature extractor registered with torch-fidelity as ``meanflow-test-tiny``: the tests
of meanflow.evaluate (and the workflow chains) score images without Inception weights, which
meanflow.evaluate never downloads; and the image sets, files and CLI check those tests share.
Import this module only where torch-fidelity is installed."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

TINY = "meanflow-test-tiny"
RUN = dict(feature_extractor=TINY, device="cpu", batch_size=16, verbose=False)  # evaluate()'s quick settings


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


def tiny_features(array, layer="feat"):
    """The tiny extractor's ``layer`` (``feat`` or ``logits``; float32, as evaluate gets them) of
    uint8 ``(N, H, W, 3)`` images: what a test computes a metric from by hand."""
    images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        return TinyExtractor(TINY, [layer])(images)[0]


# ------------------------------------------------------------- evaluate's inputs


def image_set(n=48, seed=0, size=16):
    """Smooth random colour fields in [40, 200] (room for a +-40 shift without clipping)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 200, size=(n, 4, 4, 3))
    return np.repeat(np.repeat(coarse, size // 4, 1), size // 4, 2)


def as_uint8(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def write_dir(path, array):
    from PIL import Image

    os.makedirs(path, exist_ok=True)
    for i, a in enumerate(array):
        Image.fromarray(a).save(os.path.join(path, f"{i:04d}.png"))
    return str(path)


def write_npz(path, array):
    np.savez(path, arr_0=array)
    return str(path)


def adm_tree(root, size):
    """``(tree, npz, n)``: a class-folder tree of ``n`` JPEGs of many sizes under ``root`` (the
    trainer's input) and its ADM-style reference ``.npz``, built by hand as ADM builds one:
    each image the trainer's scan keeps, converted to RGB, through its center crop to ``size``."""
    from PIL import Image

    from meanflow.data.image_folder import center_crop_arr, scan_image_folder
    from meanflow.data.synthetic import make_image_tree

    tree = os.path.join(root, "train")
    make_image_tree(tree, classes=3, per_class=5, sides=(9, 60), extras=False)
    index = scan_image_folder(tree, cache=None, workers=0)
    crops, sizes = [], set()
    for i in range(len(index)):
        with Image.open(index.path(i)) as image:
            sizes.add(image.size)
            crops.append(center_crop_arr(image.convert("RGB"), size))
    assert len(sizes) > 5 and (size, size) not in sizes  # every image cropped, most resized too
    return tree, write_npz(os.path.join(root, "adm_like.npz"), np.stack(crops)), len(index)


def cli_error(capsys, argv) -> str:
    """The one-line error of ``meanflow.evaluate argv``: exit status 2, no traceback."""
    from meanflow import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err
