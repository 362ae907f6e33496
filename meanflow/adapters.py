"""Adapters that give other libraries' models the MeanFlow signature ``(z, r, t, y) -> u``
(docs/design.md section 2, "Forward-mode AD through any model's SDPA").

Such a model has no dual pass (``model.jvp``); train it with
``MeanFlowLoss(jvp=meanflow.loss.func_jvp)`` after ``mfkernels.patch_sdpa(model)``, so that
``torch.func.jvp`` runs its attention on the fused attention JVP instead of math attention.
The trainer does both for ``--model_class`` one of :data:`ADAPTERS` (docs/design.md section 5).

Every adapter has a ``config`` (:class:`AdapterConfig`: the shape sampling reads, and what
built it) and a ``null_class`` (the label of classifier-free guidance's null class).
"""

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

import mfkernels

from .checks import check_int_at_least
from .models import batch_time, check_labels, check_model_dtype


@dataclass
class AdapterConfig:
    """An adapter and the arguments that build it: a trainer checkpoint's ``model_config``, so
    ``AdapterConfig(**checkpoint["model_config"]).build()`` rebuilds the model it holds."""

    model_class: str  # a key of ADAPTERS: the library class inside
    input_size: int  # z is (batch, in_channels, input_size, input_size)
    in_channels: int
    num_classes: int  # labels 0..num_classes - 1; num_classes is the null label; 0 = unconditional
    # the adapter's and the library constructor's other keyword arguments, as given to build()
    # (empty for a model wrapped directly)
    kwargs: dict = field(default_factory=dict)

    def build(self) -> nn.Module:
        if self.model_class not in ADAPTERS:
            raise ValueError(f"model_class must be one of {sorted(ADAPTERS)}, got {self.model_class!r}")
        adapter = ADAPTERS[self.model_class]
        model = adapter.from_kwargs(self.input_size, self.in_channels, self.num_classes, **self.kwargs)
        model.config = dataclasses.replace(self, kwargs=dict(self.kwargs))
        return model


class IntervalTimestepLabelEmbedding(nn.Module):
    """A diffusers ``CombinedTimestepLabelEmbeddings`` plus an embedding of the interval
    ``h = t - r``: ``emb(t, y) + E_h(h)``, with ``E_h`` a second sinusoid-and-MLP timestep
    embedding whose last layer starts at zero (the wrapped model, pretrained or not, is then
    unchanged at initialisation and ``u(z, r, t)`` starts as ``v(z, t)``).

    diffusers passes one ``timestep`` to every block's conditioning, so both times travel in
    it: ``timestep`` is ``cat([t, h])``, shape ``(2 * batch,)``; the result is ``(batch, dim)``.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding

        self.inner = inner
        proj_dim = inner.timestep_embedder.linear_1.in_features
        dim = inner.timestep_embedder.linear_2.out_features
        self.interval_embedder = TimestepEmbedding(in_channels=proj_dim, time_embed_dim=dim)
        nn.init.zeros_(self.interval_embedder.linear_2.weight)
        nn.init.zeros_(self.interval_embedder.linear_2.bias)

    def forward(self, timestep: Tensor, class_labels: Tensor, hidden_dtype=None) -> Tensor:
        t, h = timestep.chunk(2)
        interval = self.interval_embedder(self.inner.time_proj(h).to(dtype=hidden_dtype))
        return self.inner(t, class_labels, hidden_dtype=hidden_dtype) + interval


class DiffusersDiT(nn.Module):
    """A diffusers ``DiTTransformer2DModel`` as a MeanFlow model ``(z, r, t, y) -> u``.

    z: (batch, in_channels, size, size); r, t: (batch,) in [0, 1] (or numbers); y: (batch,)
    labels in ``[0, num_embeds_ada_norm]`` (the last one is the null label of classifier-free
    guidance), or None for all-null. u: like z. The DiT takes one timestep, so ``r`` enters through the
    interval ``h = t - r`` embedded by :class:`IntervalTimestepLabelEmbedding` in every block
    (and the final layer, which reuses block 0's); times are scaled by ``time_scale`` (1000:
    the DiT's own timestep range). A learned-sigma DiT (``out_channels = 2 * in_channels``)
    gives the velocity in its first ``in_channels`` channels. The DiT's own label dropout is
    switched off: the MeanFlow loss drops labels itself (its ``class_dropout``).
    """

    library, model_class = "diffusers", "diffusers.DiTTransformer2DModel"

    def __init__(self, transformer: nn.Module, time_scale: float = 1000.0):
        super().__init__()
        c = transformer.config
        if c.norm_type != "ada_norm_zero":
            raise ValueError(
                f"needs a class-conditional DiT (norm_type 'ada_norm_zero'), got {c.norm_type!r}"
            )
        out_channels = getattr(transformer, "out_channels", None) or c.out_channels or c.in_channels
        if out_channels not in (c.in_channels, 2 * c.in_channels):
            # Fewer would give u fewer channels than z; more, velocity channels mixed with others.
            raise ValueError(
                f"the DiT has out_channels {out_channels}: u needs {c.in_channels} (in_channels), or "
                f"{2 * c.in_channels} for a learned-sigma DiT"
            )
        self.transformer = transformer
        self.time_scale = float(time_scale)
        self.null_class = c.num_embeds_ada_norm
        self.config = AdapterConfig(self.model_class, c.sample_size, c.in_channels, c.num_embeds_ada_norm)
        for block in transformer.transformer_blocks:
            block.norm1.emb.class_embedder.dropout_prob = 0.0
            block.norm1.emb = IntervalTimestepLabelEmbedding(block.norm1.emb)

    @staticmethod
    def library_class():
        from diffusers import DiTTransformer2DModel

        return DiTTransformer2DModel

    @classmethod
    def from_kwargs(cls, input_size, in_channels, num_classes, time_scale=1000.0, **kwargs) -> "DiffusersDiT":
        """A fresh ``DiTTransformer2DModel(sample_size=input_size, in_channels=in_channels,
        num_embeds_ada_norm=num_classes, **kwargs)`` (its own defaults are DiT-XL/2's)."""
        from diffusers import DiTTransformer2DModel

        _refuse_shape_kwargs(kwargs, sample_size="input_size", num_embeds_ada_norm="num_classes")
        transformer = DiTTransformer2DModel(
            sample_size=input_size, in_channels=in_channels, num_embeds_ada_norm=num_classes, **kwargs
        )
        return cls(transformer, time_scale)

    def forward(self, z: Tensor, r: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        r, t, y = _check_inputs(self, z, r, t, y)
        size = self.config.input_size
        if tuple(z.shape[-2:]) != (size, size):
            # The library patches any size and fits its positional embedding to it (or fails deep
            # inside): a model trained at one size then runs at another, untrained for it.
            raise ValueError(
                f"z is {z.shape[-2]}x{z.shape[-1]}, but the DiT's sample_size is {size}: z must be "
                f"(batch, {self.config.in_channels}, {size}, {size})"
            )
        timestep = torch.cat([t, t - r]) * self.time_scale
        out = self.transformer(z, timestep=timestep, class_labels=y, return_dict=False)[0]
        return out[:, : z.shape[1]]


def _check_inputs(model, z, r, t, y):
    """``(r, t, y)`` as the DiT takes them: times a number, a 0-d or a ``(batch,)`` tensor,
    batched (:func:`meanflow.models.batch_time`); labels checked (:func:`meanflow.models.check_labels`),
    None the null label on every row. A bad input is an error naming it, not one from inside the
    library model (an embedding's IndexError, a device-side assert on a GPU)."""
    channels = model.config.in_channels
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor (batch, {channels}, height, width)")
    if z.dim() != 4 or z.shape[1] != channels:
        raise ValueError(f"z must have shape (batch, {channels}, height, width), got {tuple(z.shape)}")
    check_model_dtype("z", z, next(model.parameters()).dtype)
    r, t = (batch_time(name, value, z.shape[0], z) for name, value in (("r", r), ("t", t)))
    if y is None:
        return r, t, torch.full((z.shape[0],), model.null_class, dtype=torch.long, device=z.device)
    check_labels(y, z, model.null_class)
    return r, t, y


def _refuse_shape_kwargs(kwargs: dict, **ours):
    """The library's own names (``{library name: ours}``) of what the trainer sets from the data."""
    for name in sorted(set(kwargs) & set(ours)):
        raise ValueError(f"model_kwargs.{name}: give {ours[name]} instead (set from the data by default)")


class TimeEmbedding(nn.Module):
    """A ``(batch,)`` time -> DiT's sinusoids of ``time_scale * t`` -> Linear, SiLU, Linear:
    ``(batch, dim)``."""

    def __init__(self, dim: int, time_scale: float, frequency_embedding_size: int = 256):
        super().__init__()
        self.time_scale, self.frequencies = float(time_scale), frequency_embedding_size
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        emb = mfkernels.timestep_embedding(t * self.time_scale, self.frequencies)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class TimmViT(nn.Module):
    """A timm ``VisionTransformer`` as a MeanFlow model ``(z, r, t, y) -> u``.

    z: (batch, in_chans, img_size, img_size); r, t: (batch,) in [0, 1] (or numbers); y: (batch,)
    labels in ``[0, num_classes]`` (``num_classes`` is the null label of classifier-free
    guidance), or None for all-null (and for an unconditional model, ``num_classes = 0``). u: like z.

    The ViT's patch embedding, positions and blocks and its final norm make the tokens; a
    linear head maps each patch token back to its ``p x p x C`` pixels (zero-initialised, so
    ``u`` starts at 0 as adaLN-Zero's DiT does). ``t`` and the interval ``h = t - r`` get a
    sinusoid-and-MLP embedding each (times scaled by ``time_scale``; 1, the presets' scale:
    docs/design.md section 7), the label a learned table with a null row; their sum is added to
    every token after the positions. Added rather than prepended as tokens: the sequence and
    the ViT's positional embedding stay as timm built them (a pretrained ViT's too) and no
    token has to be cut from the output. Class or register tokens of a wrapped ViT are dropped
    from the output; its classifier head is removed. The ViT's token dropout
    (``patch_drop_rate``) would lose patches of ``u``: refused.
    """

    library, model_class = "timm", "timm.VisionTransformer"

    def __init__(self, vit: nn.Module, num_classes: int, time_scale=1.0, frequency_embedding_size=256):
        super().__init__()
        if not isinstance(vit.patch_drop, nn.Identity):
            raise ValueError("the ViT drops patch tokens (patch_drop_rate > 0): u needs every patch")
        check_int_at_least("num_classes", num_classes, 0)
        dim, embed = vit.embed_dim, vit.patch_embed
        sizes = tuple(embed.img_size) if embed.img_size is not None else ()
        if any(size % patch for size, patch in zip(sizes, embed.patch_size)):
            # The patches would miss the last rows/columns: u could not cover z.
            raise ValueError(
                f"the ViT's img_size {sizes} is not a multiple of its patch_size {tuple(embed.patch_size)}"
            )
        vit.reset_classifier(0, "")
        self.vit = vit
        self.patch_size, channels = tuple(embed.patch_size), embed.proj.in_channels
        self.t_embedder = TimeEmbedding(dim, time_scale, frequency_embedding_size)
        self.h_embedder = TimeEmbedding(dim, time_scale, frequency_embedding_size)
        self.null_class = num_classes
        self.y_embedder = nn.Embedding(num_classes + 1, dim) if num_classes else None
        self.head = nn.Linear(dim, self.patch_size[0] * self.patch_size[1] * channels)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        size = embed.img_size[0] if embed.img_size is not None else 0
        self.config = AdapterConfig(self.model_class, size, channels, num_classes)

    @staticmethod
    def library_class():
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer

    @classmethod
    def from_kwargs(
        cls, input_size, in_channels, num_classes, time_scale=1.0, frequency_embedding_size=256, **kwargs
    ) -> "TimmViT":
        """A fresh ``VisionTransformer(img_size=input_size, in_chans=in_channels, **kwargs)``
        without class token, pooling or classifier (its own defaults are ViT-B/16's);
        ``num_classes`` is the adapter's label count."""
        from timm.models.vision_transformer import VisionTransformer

        _refuse_shape_kwargs(kwargs, img_size="input_size", in_chans="in_channels")
        kwargs = {"class_token": False, "global_pool": "", **kwargs}
        vit = VisionTransformer(img_size=input_size, in_chans=in_channels, num_classes=0, **kwargs)
        return cls(vit, num_classes, time_scale, frequency_embedding_size)

    def forward(self, z: Tensor, r: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        if self.y_embedder is None and y is not None:
            raise ValueError("y must be None for an unconditional model (num_classes=0)")
        r, t, y = _check_inputs(self, z, r, t, y)
        vit = self.vit
        c = self.t_embedder(t) + self.h_embedder(t - r)
        if self.y_embedder is not None:
            c = c + self.y_embedder(y)
        # VisionTransformer.forward_features, with the conditioning added after the positions.
        x = vit._pos_embed(vit.patch_embed(z))
        x = vit.norm_pre(x + c.to(x.dtype)[:, None])
        x = vit.norm(vit.blocks(x))[:, vit.num_prefix_tokens :]
        return self._unpatchify(self.head(x), z.shape)

    def _unpatchify(self, x: Tensor, shape) -> Tensor:
        """``(B, N, p*p*C)`` -> ``(B, C, H, W)``; the tokens are the patches in row-major order."""
        b, c, h, w = shape
        ph, pw = self.patch_size
        x = x.reshape(b, h // ph, w // pw, ph, pw, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, h, w)


# The library models the trainer can build (--model_class), by the name it takes.
ADAPTERS = {cls.model_class: cls for cls in (DiffusersDiT, TimmViT)}


def check_model_kwargs(model_class: str, kwargs: dict) -> None:
    """Refuse a keyword that neither the adapter of ``model_class`` nor its library class takes
    (a ValueError naming it): the trainer checks its options before it reads the data, and an
    image folder's scan reads every image."""
    adapter = ADAPTERS[model_class]
    library = adapter.library_class()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {
        name
        for fn in (adapter.from_kwargs, library.__init__)
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in named and name != "self"
    }
    for name in sorted(set(kwargs) - names):
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"model_kwargs.{name}: neither {library.__name__} nor its adapter takes it{hint}")
