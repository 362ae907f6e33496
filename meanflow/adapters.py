"""Adapters that give other libraries' models the MeanFlow signature ``(z, r, t, y) -> u``
(docs/design.md section 2, "Forward-mode AD through any model's SDPA").

Such a model has no dual pass (``model.jvp``); train it with
``MeanFlowLoss(jvp=meanflow.loss.func_jvp)`` after ``mfkernels.patch_sdpa(model)``, so that
``torch.func.jvp`` runs its attention on the fused attention JVP instead of math attention.
"""

import torch
from torch import Tensor, nn


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

    z: (batch, in_channels, size, size); r, t: (batch,) in [0, 1]; y: (batch,) labels in
    ``[0, num_embeds_ada_norm]`` (the last one is the null label of classifier-free guidance),
    or None for all-null. u: like z. The DiT takes one timestep, so ``r`` enters through the
    interval ``h = t - r`` embedded by :class:`IntervalTimestepLabelEmbedding` in every block
    (and the final layer, which reuses block 0's); times are scaled by ``time_scale`` (1000:
    the DiT's own timestep range). A learned-sigma DiT (``out_channels = 2 * in_channels``)
    gives the velocity in its first ``in_channels`` channels. The DiT's own label dropout is
    switched off: the MeanFlow loss drops labels itself (its ``class_dropout``).
    """

    def __init__(self, transformer: nn.Module, time_scale: float = 1000.0):
        super().__init__()
        norm_type = transformer.config.norm_type
        if norm_type != "ada_norm_zero":
            raise ValueError(f"needs a class-conditional DiT (norm_type 'ada_norm_zero'), got {norm_type!r}")
        self.transformer = transformer
        self.time_scale = float(time_scale)
        self.null_class = transformer.config.num_embeds_ada_norm
        for block in transformer.transformer_blocks:
            block.norm1.emb.class_embedder.dropout_prob = 0.0
            block.norm1.emb = IntervalTimestepLabelEmbedding(block.norm1.emb)

    def forward(self, z: Tensor, r: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            y = torch.full((z.shape[0],), self.null_class, dtype=torch.long, device=z.device)
        timestep = torch.cat([t, t - r]) * self.time_scale
        out = self.transformer(z, timestep=timestep, class_labels=y, return_dict=False)[0]
        return out[:, : z.shape[1]]
