"""A timm ``VisionTransformer`` as a MeanFlow model through :class:`meanflow.adapters.TimmViT`:
its output layout, how ``r``, ``t`` and ``y`` enter, and ``MeanFlowLoss(jvp=func_jvp)`` under
``mfkernels.patch_sdpa`` against the same model under math attention (docs/design.md section
3's tolerance for the input dtype), on the reference backend and the Triton kernels."""

import copy

import pytest
import torch
from numerics import assert_close, needs_triton
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels
from meanflow.adapters import AdapterConfig, TimmViT
from meanflow.loss import MeanFlowLoss, func_jvp

timm = pytest.importorskip("timm")

NUM_CLASSES = 10


def tiny_vit(randomise=True, **kwargs) -> TimmViT:
    """Two blocks on 8 x 8 x 4 inputs (16 tokens of 2 x 2 patches), head dim 16."""
    vit = dict(patch_size=2, embed_dim=32, depth=2, num_heads=2, **kwargs)
    model = AdapterConfig("timm.VisionTransformer", 8, 4, NUM_CLASSES, vit).build()
    if randomise:  # the head starts at zero: random weights everywhere, so every path carries a gradient
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.2)
    return model


def inputs(dtype=torch.float32):
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(4, 4, 8, 8, generator=generator, dtype=dtype)
    t = torch.tensor([0.9, 0.5, 0.3, 1.0], dtype=dtype)
    return z, t, torch.tensor([1, 4, 7, NUM_CLASSES])


def test_starts_at_zero_and_keeps_the_vit_plain():
    """A fresh adapter gives u = 0 (zero head); the ViT has no class token, pooling or classifier."""
    model = tiny_vit(randomise=False)
    z, t, y = inputs()
    assert torch.equal(model(z, t / 2, t, y), torch.zeros_like(z))
    vit = model.vit
    assert vit.cls_token is None and vit.global_pool == "" and isinstance(vit.head, torch.nn.Identity)
    assert model.config.kwargs == dict(patch_size=2, embed_dim=32, depth=2, num_heads=2)


def test_every_input_enters():
    """u depends on r (through h = t - r), on t, and on the label; None is the null label."""
    model = tiny_vit().eval()
    z, t, y = inputs()
    u = model(z, t / 2, t, y)
    assert u.shape == z.shape
    assert not torch.allclose(u, model(z, t / 4, t, y))
    assert not torch.allclose(u, model(z, t / 2, t * 0.9, y))
    assert not torch.allclose(u, model(z, t / 2, t, (y + 1) % NUM_CLASSES))
    assert torch.equal(model(z, t, t, None), model(z, t, t, torch.full_like(y, NUM_CLASSES)))


def test_patches_come_back_in_place():
    """``_unpatchify`` inverts timm's token order (row-major patches) and (p, p, C) per token:
    output patch (i, j) is token i * grid + j."""
    model = tiny_vit(randomise=False)
    z = torch.randn(3, 4, 8, 8)
    b, c, g, p = 3, 4, 4, 2
    tokens = z.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * c)
    assert torch.equal(model._unpatchify(tokens, z.shape), z)
    # and the ViT's own token k is patch (k // g, k % g): a one-pixel change moves one token
    with torch.no_grad():
        before = model.vit.patch_embed(z)
        z[0, 1, 5, 2] += 1.0  # row 5, column 2: patch (2, 1)
        changed = (model.vit.patch_embed(z) - before).abs().sum(-1)[0].nonzero().flatten()
    assert changed.tolist() == [2 * g + 1]


def test_wraps_a_vit_with_class_token_and_classifier():
    """A ViT as timm builds it by default (class token, token pooling, a classifier): the head is
    removed and the class token does not reach u."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        img_size=8, patch_size=2, in_chans=4, num_classes=7, embed_dim=32, depth=1, num_heads=2
    )
    model = TimmViT(vit, num_classes=NUM_CLASSES)
    z, t, y = inputs()
    assert model(z, t, t, y).shape == z.shape and isinstance(vit.head, torch.nn.Identity)
    assert (model.config.input_size, model.config.in_channels, model.null_class) == (8, 4, NUM_CLASSES)
    with pytest.raises(ValueError, match="patch_drop_rate"):
        TimmViT(VisionTransformer(img_size=8, patch_size=2, patch_drop_rate=0.5), NUM_CLASSES)
    for num_classes in (-1, True):
        with pytest.raises(ValueError, match=rf"^num_classes must be an int >= 0, got {num_classes}$"):
            TimmViT(vit, num_classes=num_classes)
    with pytest.raises(ValueError, match="model_kwargs.img_size: give input_size"):
        AdapterConfig("timm.VisionTransformer", 8, 4, NUM_CLASSES, {"img_size": 8}).build()


def loss_and_grads(model, objective, x, y, noise):
    model.zero_grad()
    loss, _ = objective(model, x, y, noise=noise)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "backend,dtype", [("reference", torch.float64), pytest.param("triton", torch.float32, marks=needs_triton)]
)
def test_func_jvp_loss_and_grads_match_math_attention(backend, dtype):
    reference = tiny_vit().double()
    x, _, y = inputs(torch.float64)
    loss_fn = MeanFlowLoss(jvp=func_jvp, ratio_r_neq_t=0.5, class_dropout=0.25)
    noise = loss_fn.sample_noise(x, torch.Generator().manual_seed(5))
    with sdpa_kernel(SDPBackend.MATH):
        ref_loss, ref_grads = loss_and_grads(reference, loss_fn, x, y, noise)

    model = mfkernels.patch_sdpa(copy.deepcopy(reference).to(dtype), backend)
    noise = {k: v.to(dtype) if v.is_floating_point() else v for k, v in noise.items()}
    loss, grads = loss_and_grads(model, loss_fn, x.to(dtype), y, noise)
    assert_close("loss", loss, ref_loss, dtype)
    # The key bias's gradient is zero in exact arithmetic (softmax ignores a shift shared by
    # all keys): each gradient is measured against at least 1e-3 of the largest one.
    largest = max(g.abs().max().item() for g in ref_grads.values())
    assert ref_grads["h_embedder.mlp.2.weight"].abs().max() > 1e-3 * largest  # r reaches the loss
    for name, grad in grads.items():
        assert_close(name, grad, ref_grads[name], dtype, floor=1e-3 * largest)


def test_each_time_reaches_its_embedder():
    """``t`` goes to the t embedder, the interval ``h = t - r`` to the h embedder."""
    model = tiny_vit().eval()
    fed = {}
    for name in ("t_embedder", "h_embedder"):
        getattr(model, name).register_forward_pre_hook(lambda m, args, name=name: fed.update({name: args[0]}))
    z, t, y = inputs()
    r = torch.tensor([0.1, 0.5, 0.0, 0.25])
    model(z, r, t, y)
    assert torch.equal(fed["t_embedder"], t) and torch.equal(fed["h_embedder"], t - r)
