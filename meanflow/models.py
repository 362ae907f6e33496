"""DiT for MeanFlow: ``model(z, r, t, y)`` gives the average velocity ``u``, and
``model.jvp(z, r, t, y, v)`` gives ``(u, du/dt)`` for the tangent ``(v, 0, 1)`` in one dual pass.

The architecture is DiT's (Peebles & Xie 2023; parameter names follow its ``models.py``):
patch embedding, fixed 2-D sin-cos positions, adaLN-Zero blocks, a modulated final layer.
MeanFlow adds a second time embedder (docs/design.md section 1): ``time_cond="t,h"`` embeds ``t``
and ``h = t - r``; ``time_cond="r,t"`` embeds ``r`` and ``t``. The label table has one extra
row, the learned null class used for classifier-free guidance.

Every module has two paths: ``forward`` in plain torch (the primal; ``torch.func`` can
differentiate it, which is how the tests check ``jvp``) and ``jvp`` through the dual ops
of ``mfkernels``, which carry the tangent next to the value and keep it out of autograd.
"""

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import mfkernels
from mfkernels import dispatch

from .dit_config import PRESETS, DiTConfig  # noqa: F401 (PRESETS: public name)
from .interchange import PretrainedMixin


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def _linear_jvp(layer: nn.Linear, x, x_dot):
    return mfkernels.linear_jvp(x, x_dot, layer.weight, layer.bias)


class TimestepEmbedder(nn.Module):
    """A scalar time per sample -> sinusoidal features -> MLP, as in DiT."""

    def __init__(self, hidden_size, frequency_embedding_size=256, time_scale=1000.0):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size
        self.time_scale = time_scale

    def forward(self, t):
        emb = mfkernels.timestep_embedding(t * self.time_scale, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))

    def jvp(self, t, t_dot, backend=None):
        emb, emb_dot = mfkernels.timestep_embedding_jvp(
            t * self.time_scale, t_dot * self.time_scale, self.frequency_embedding_size
        )
        dtype = self.mlp[0].weight.dtype
        h, h_dot = _linear_jvp(self.mlp[0], emb.to(dtype), emb_dot.to(dtype))
        h, h_dot = mfkernels.silu_jvp(h, h_dot, backend=backend)
        return _linear_jvp(self.mlp[2], h, h_dot)


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; label ``num_classes`` is the learned null class (CFG)."""

    def __init__(self, num_classes, hidden_size):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)
        self.num_classes = num_classes

    def forward(self, labels):
        return self.embedding_table(labels)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)

    def jvp(self, x, x_dot, backend=None):
        return mfkernels.rms_norm_jvp(x, x_dot, self.weight, self.eps, backend=backend)


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qk_norm=False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else None
        # timm's switch. False: softmax(q k^T / sqrt(d)) v in plain ops, which torch.func.jvp
        # can go through (see unfused_attention).
        self.fused_attn = True

    def _heads(self, qkv):
        """``(B, N, 3 D)`` -> three ``(B, heads, N, head_dim)`` views."""
        b, n, _ = qkv.shape
        return qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    @staticmethod
    def _merge(o):
        b, h, n, d = o.shape
        return o.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, x):
        q, k, v = self._heads(self.qkv(x))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(self._merge(o))

    def jvp(self, x, x_dot, backend=None):
        qkv, qkv_dot = _linear_jvp(self.qkv, x, x_dot)
        (q, k, v), (q_dot, k_dot, v_dot) = self._heads(qkv), self._heads(qkv_dot)
        if self.q_norm is not None:
            q, q_dot = self.q_norm.jvp(q, q_dot, backend)
            k, k_dot = self.k_norm.jvp(k, k_dot, backend)
        o, o_dot, _ = mfkernels.attention_jvp(q, k, v, q_dot, k_dot, v_dot, backend=backend)
        return _linear_jvp(self.proj, self._merge(o), self._merge(o_dot))


@contextlib.contextmanager
def unfused_attention(model: nn.Module):
    """Every attention in ``model`` (ours or timm's) in plain ops while inside: what
    ``torch.func.jvp`` through the plain forward needs. SDPA's fused kernels have no forward-mode
    AD, and the backward through its math backend fails under CUDA bf16 autocast in torch 2.11
    (seen on an H200: its safe softmax refuses the gradient's dtype)."""
    switched = [m for m in model.modules() if getattr(m, "fused_attn", False) is True]
    for m in switched:
        m.fused_attn = False
    try:
        yield model
    finally:
        for m in switched:
            m.fused_attn = True


# Devices whose plain forward runs fc1's bias + GELU as our one fused kernel: ATen's tanh GELU
# is slow on the CPU. Elsewhere ATen's Linear + GELU, which torch.compile fuses on its own.
FUSED_BIAS_GELU_DEVICES = frozenset({"cpu"})


class Mlp(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        if x.device.type in FUSED_BIAS_GELU_DEVICES:
            return self.fc2(mfkernels.gelu_tanh(F.linear(x, self.fc1.weight), self.fc1.bias))
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))

    def jvp(self, x, x_dot, backend=None):
        # fc1's bias goes into the fused bias + GELU op.
        h, h_dot = mfkernels.linear_jvp(x, x_dot, self.fc1.weight)
        h, h_dot = mfkernels.gelu_tanh_jvp(h, h_dot, self.fc1.bias, backend=backend)
        return _linear_jvp(self.fc2, h, h_dot)


class DiTBlock(nn.Module):
    """Attention and MLP, each behind adaLN-Zero: ``x + gate * f(modulate(LN(x)))``."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, qk_norm=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qk_norm)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    # Both paths take ``c_act = silu(c)``: the DiT computes it once for all blocks.
    def forward(self, x, c_act):
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation[1](c_act).chunk(6, dim=1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), sh1, sc1))
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))

    def jvp(self, x, x_dot, c_act, c_act_dot, backend=None):
        mod, mod_dot = _linear_jvp(self.adaLN_modulation[1], c_act, c_act_dot)
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=1)
        sh1_d, sc1_d, g1_d, sh2_d, sc2_d, g2_d = mod_dot.chunk(6, dim=1)
        m, m_dot = mfkernels.layernorm_modulate_jvp(x, x_dot, sh1, sc1, sh1_d, sc1_d, backend=backend)
        a, a_dot = self.attn.jvp(m, m_dot, backend)
        x, x_dot = mfkernels.gated_residual_jvp(x, x_dot, g1, g1_d, a, a_dot, backend=backend)
        m, m_dot = mfkernels.layernorm_modulate_jvp(x, x_dot, sh2, sc2, sh2_d, sc2_d, backend=backend)
        f, f_dot = self.mlp.jvp(m, m_dot, backend)
        return mfkernels.gated_residual_jvp(x, x_dot, g2, g2_d, f, f_dot, backend=backend)


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c_act):
        shift, scale = self.adaLN_modulation[1](c_act).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))

    def jvp(self, x, x_dot, c_act, c_act_dot, backend=None):
        mod, mod_dot = _linear_jvp(self.adaLN_modulation[1], c_act, c_act_dot)
        (shift, scale), (shift_d, scale_d) = mod.chunk(2, dim=1), mod_dot.chunk(2, dim=1)
        m, m_dot = mfkernels.layernorm_modulate_jvp(x, x_dot, shift, scale, shift_d, scale_d, backend=backend)
        return _linear_jvp(self.linear, m, m_dot)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_channels, hidden_size):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)

    def forward(self, z):
        # The convolution gives channel-major tokens; elementwise ops keep their first input's
        # layout, so without one copy here the whole residual stream would stay transposed and
        # every LayerNorm would copy it again (13 copies a forward at DiT-T/8).
        return self.proj(z).flatten(2).transpose(1, 2).contiguous()

    def jvp(self, z, z_dot):
        # A stride-p convolution is a Linear over flattened (C, p, p) patches.
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)
        return mfkernels.linear_jvp(self._patches(z), self._patches(z_dot), weight, self.proj.bias)

    def _patches(self, z):
        b, c, h, w = z.shape
        p = self.patch_size
        patches = z.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return patches.reshape(b, (h // p) * (w // p), c * p * p)


class DiT(PretrainedMixin, nn.Module):
    # No dropout, no batch statistics: train() and eval() compute the same function, so
    # MeanFlowLoss may read a guidance value off a training forward instead of a pass of its own.
    same_in_train_and_eval = True

    def __init__(self, config: DiTConfig, backend: str | None = None):
        super().__init__()
        self.config = config
        self.backend = dispatch.check_backend(backend) or None
        c = config
        self.x_embedder = PatchEmbed(c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size, c.frequency_embedding_size, c.time_scale)
        second = TimestepEmbedder(c.hidden_size, c.frequency_embedding_size, c.time_scale)
        # "t,h" embeds h = t - r; "r,t" embeds r (seed 000's model).
        self.second_time = "h" if c.time_cond == "t,h" else "r"
        self.add_module(f"{self.second_time}_embedder", second)
        self.y_embedder = LabelEmbedder(c.num_classes, c.hidden_size) if c.num_classes else None
        grid = c.input_size // c.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed_2d(c.hidden_size, grid)[None].float())
        self.blocks = nn.ModuleList(
            DiTBlock(c.hidden_size, c.num_heads, c.mlp_ratio, c.qk_norm) for _ in range(c.depth)
        )
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, c.in_channels)
        self.initialize_weights()

    @classmethod
    def from_config(cls, name: str, backend: str | None = None, **overrides) -> "DiT":
        """``DiT.from_config("DiT-B/2", num_classes=1000, in_channels=4, input_size=32)``."""
        return cls(DiTConfig.from_name(name, **overrides), backend=backend)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def initialize_weights(self):
        """DiT's initialisation, with adaLN-Zero: every block starts as the identity and the
        output starts at zero."""

        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for embedder in (self.t_embedder, self.second_embedder):
            nn.init.normal_(embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(embedder.mlp[2].weight, std=0.02)
        for layer in (*self.blocks, self.final_layer):
            nn.init.zeros_(layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    @property
    def second_embedder(self) -> TimestepEmbedder:
        return getattr(self, f"{self.second_time}_embedder")

    # ------------------------------------------------------------------ inputs

    def _check_inputs(self, z, r, t, y):
        c = self.config
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise TypeError("z must be a floating-point tensor (batch, channels, height, width)")
        want = (c.in_channels, c.input_size, c.input_size)
        if z.dim() != 4 or tuple(z.shape[1:]) != want:
            raise ValueError(
                f"z must have shape (batch, {want[0]}, {want[1]}, {want[2]}), got {tuple(z.shape)}"
            )
        check_model_dtype("z", z, self.x_embedder.proj.weight.dtype)
        batch = z.shape[0]
        r, t = (batch_time(name, v, batch, z) for name, v in (("r", r), ("t", t)))
        if self.y_embedder is None:
            if y is not None:
                raise ValueError("y must be None for an unconditional model (num_classes=0)")
        else:
            check_labels(y, z, c.num_classes)
        return r, t

    def _second_time(self, r, t):
        return t - r if self.second_time == "h" else r

    def _unpatchify(self, x):
        """``(B, N, p*p*C)`` -> ``(B, C, H, W)``, DiT's channel order."""
        c, p = self.config.in_channels, self.config.patch_size
        b, n, _ = x.shape
        g = int(math.isqrt(n))
        x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, g * p, g * p)

    # ------------------------------------------------------------------- paths

    def forward(self, z, r, t, y=None):
        """The average velocity ``u(z, r, t | y)``, same shape as ``z``."""
        r, t = self._check_inputs(z, r, t, y)
        x = self.x_embedder(z)
        x = x + self.pos_embed.to(x.dtype)
        c = self.t_embedder(t) + self.second_embedder(self._second_time(r, t))
        if self.y_embedder is not None:
            c = c + self.y_embedder(y)
        c_act = F.silu(c)
        for block in self.blocks:
            x = block(x, c_act)
        return self._unpatchify(self.final_layer(x, c_act))

    def jvp(self, z, r, t, y, z_dot, r_dot=0.0, t_dot=1.0):
        """``(u, du)`` where ``du`` is the derivative of ``u`` along ``(z_dot, r_dot, t_dot)``.

        With the defaults and ``z_dot = v`` this is MeanFlow's ``du/dt`` (tangent
        ``(v, 0, 1)``). One pass: every layer carries its tangent next to its value; the
        tangent never requires grad, and gradients flow through ``u`` as in ``forward``.
        """
        r, t = self._check_inputs(z, r, t, y)
        if not isinstance(z_dot, torch.Tensor) or z_dot.shape != z.shape:
            got = tuple(z_dot.shape) if isinstance(z_dot, torch.Tensor) else type(z_dot).__name__
            raise ValueError(f"z_dot must have the shape of z {tuple(z.shape)}, got {got}")
        if z_dot.dtype != z.dtype or z_dot.device != z.device:
            raise TypeError(f"z_dot must match z's dtype {z.dtype} and device {z.device}")
        # Each tangent in its time's dtype: the loss draws float32 times for 16-bit data
        # (docs/design.md section 1), and the time embedders take a time and its tangent in one dtype.
        batch = z.shape[0]
        r_dot = batch_time("r_dot", r_dot, batch, z, dtype=r.dtype).detach()
        t_dot = batch_time("t_dot", t_dot, batch, z, dtype=t.dtype).detach()
        backend = self.backend
        x, x_dot = self.x_embedder.jvp(z, z_dot.detach())
        x = x + self.pos_embed.to(x.dtype)
        c, c_dot = self.t_embedder.jvp(t, t_dot, backend)
        s, s_dot = self.second_embedder.jvp(self._second_time(r, t), self._second_time(r_dot, t_dot), backend)
        c, c_dot = c + s, c_dot + s_dot
        if self.y_embedder is not None:
            # Under autocast the time MLPs give bf16 while the table is fp32; keep c and
            # c_dot in one dtype.
            c = c + self.y_embedder(y).to(c.dtype)
        c_act, c_act_dot = mfkernels.silu_jvp(c, c_dot, backend=backend)
        for block in self.blocks:
            x, x_dot = block.jvp(x, x_dot, c_act, c_act_dot, backend)
        out, out_dot = self.final_layer.jvp(x, x_dot, c_act, c_act_dot, backend)
        return self._unpatchify(out), self._unpatchify(out_dot)


def check_model_dtype(name: str, x: torch.Tensor, model_dtype: torch.dtype) -> None:
    """Outside autocast, the model's input ``x`` must have its parameters' dtype: a TypeError
    naming ``name``, not a convolution's "Input type and bias type should be the same"."""
    if x.dtype != model_dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{name} has dtype {x.dtype} but the model's parameters have {model_dtype}: give {name} "
            f"in {model_dtype}, cast the model, or run under torch.autocast"
        )


def check_class_labels(y: torch.Tensor, num_classes: int) -> None:
    """A ``ValueError`` naming ``y`` when a label lies outside ``[0, num_classes]`` (the last
    one is the null label of classifier-free guidance), instead of an embedding's IndexError
    (or a device-side assert on a GPU)."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > num_classes):
        raise ValueError(
            f"y must hold class labels in [0, {num_classes - 1}] (or {num_classes}, the null label), "
            f"got labels from {int(y.min())} to {int(y.max())}"
        )


def check_labels(y, z: torch.Tensor, num_classes: int) -> None:
    """``y`` must be an integer ``(batch,)`` tensor on ``z``'s device, its labels in
    ``[0, num_classes]`` (:func:`check_class_labels`). Reading the labels costs a GPU a host
    sync per call: only CPU labels are read here (sample() reads them on any device), and a
    compiled step never reads them."""
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int32, torch.int64):
        raise TypeError("y must be an integer tensor of class labels, shape (batch,)")
    if tuple(y.shape) != (z.shape[0],):
        raise ValueError(f"y must have shape ({z.shape[0]},), got {tuple(y.shape)}")
    if y.device != z.device:
        raise ValueError(f"y is on {y.device} but z is on {z.device}")
    check_cpu_labels(y, num_classes)


def check_cpu_labels(y: torch.Tensor, num_classes: int) -> None:
    """:func:`check_class_labels` where it costs nothing: CPU labels outside a compiled step
    (reading GPU labels would stall every call on a host sync)."""
    if y.device.type == "cpu" and not torch.compiler.is_compiling():
        check_class_labels(y, num_classes)


def batch_time(name, value, batch, like, dtype=None):
    """A time given as a number, a 0-d tensor or a ``(batch,)`` tensor -> ``(batch,)`` tensor on
    ``like``'s device (the model input ``z``). A number becomes ``dtype``, by default float32 or
    ``like``'s dtype if wider, as the loss and the sampler make them (docs/design.md section 1):
    rounded to 16 bits, ``t`` near 1 would move the sinusoids' phase ``time_scale * t`` by up to 2
    at DiT's ``time_scale`` 1000.
    A tensor keeps its dtype."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        dtype = dtype or torch.promote_types(like.dtype, torch.float32)
        return torch.full((batch,), float(value), dtype=dtype, device=like.device)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a float or a floating-point tensor, got {type(value).__name__}")
    if value.dim() == 0:
        value = value.expand(batch)
    if tuple(value.shape) != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) or be a scalar, got {tuple(value.shape)}")
    if value.device != like.device:
        raise ValueError(f"{name} is on {value.device} but z is on {like.device}")
    return value


def sincos_pos_embed_2d(dim, grid_size):
    """DiT/MAE fixed 2-D sin-cos positions: ``(grid_size**2, dim)`` in float64."""
    coords = torch.arange(grid_size, dtype=torch.float64)
    # MAE's order: the column coordinate fills the first half of the channels.
    cols, rows = torch.meshgrid(coords, coords, indexing="xy")

    def embed_1d(pos, d):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([embed_1d(cols, dim // 2), embed_1d(rows, dim // 2)], dim=1)
