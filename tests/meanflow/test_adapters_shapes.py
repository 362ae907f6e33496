"""An adapter whose library model cannot give ``u`` the shape of ``z`` is refused when it is
built, naming the setting: a DiT with fewer output channels than input ones (or more, but not
learned sigma's twice), a ViT whose image size leaves a strip of pixels no patch covers. Either
used to build, then fail in the loss's broadcast or give a ``u`` of the wrong size."""

import pytest

from meanflow.adapters import AdapterConfig

DIT = dict(num_attention_heads=2, attention_head_dim=8, num_layers=1, patch_size=2)
VIT = dict(patch_size=2, embed_dim=32, depth=1, num_heads=2)


@pytest.mark.parametrize("out_channels, ok", [(None, True), (4, True), (8, True), (3, False), (12, False)])
def test_the_dit_must_give_every_channel_of_z(out_channels, ok):
    pytest.importorskip("diffusers")
    config = AdapterConfig("diffusers.DiTTransformer2DModel", 8, 4, 10, {**DIT, "out_channels": out_channels})
    if ok:
        assert config.build().config.in_channels == 4
    else:
        with pytest.raises(
            ValueError, match=rf"out_channels {out_channels}: u needs 4 .* or 8 for a learned-sigma"
        ):
            config.build()


def test_the_vit_patches_must_cover_the_image():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"img_size \(9, 9\) is not a multiple of its patch_size \(2, 2\)"):
        AdapterConfig("timm.VisionTransformer", 9, 4, 10, VIT).build()
    assert AdapterConfig("timm.VisionTransformer", 10, 4, 10, VIT).build().config.input_size == 10
