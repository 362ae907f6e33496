"""Training objectives (docs/design.md section 1): MeanFlow, and plain flow matching as the baseline.

``loss, stats = MeanFlowLoss()(model, x, y)`` runs one MeanFlow step on a batch: time
sampling, guidance folded into the target, one dual pass ``model.jvp`` for ``(u, du/dt)``
(or ``torch.func.jvp``: :func:`func_jvp`) on the rows with ``r != t`` and a plain forward on
the rows with ``r = t`` (whose target does not depend on ``du/dt``), the stop-gradient
target and the adaptive weight. Conventions: ``t = 1`` is noise, ``z_t = (1 - t) x + t e``, ``v = e - x``.

The random draws (times, noise, class dropout) come from :meth:`sample_noise`, separate from
the loss itself, so that a trainer can draw them outside ``torch.compile`` and share one draw
between data-parallel ranks. Stats are 0-d tensors (no ``.item()``: no host sync, no graph
break); the caller reads them when it logs.
"""

import math

import torch
import torch.nn as nn
from torch import Tensor

from .models import check_cpu_labels


def logit_normal(n: int, mean: float, std: float, device, generator=None, dtype=torch.float32) -> Tensor:
    """``sigmoid(N(mean, std))`` samples in (0, 1), shape ``(n,)``."""
    return torch.sigmoid(mean + std * torch.randn(n, device=device, generator=generator, dtype=dtype))


def accumulation_dtype(x: Tensor) -> torch.dtype:
    """The dtype of times and of the squared errors for data like ``x``: float32 for 16- and
    32-bit data, float64 for float64 data (a float64 model is checked to ~1e-12)."""
    return torch.promote_types(x.dtype, torch.float32)


def _check_number(name, value):
    """A finite int or float: a NaN or infinite option made every loss NaN (or 0) without a word."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _check_unit(name, value, low=0.0, high=1.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def spread_rows(n: int, ratio: float, phase: float) -> Tensor:
    """Boolean ``(n,)``: row ``i`` is marked when ``floor((i + 1) ratio + phase) > floor(i ratio + phase)``.

    With ``phase`` uniform in [0, 1) every row is marked with probability ``ratio``, as with
    independent coin flips, but any run of ``L`` consecutive rows holds ``floor(L ratio)`` or
    ``ceil(L ratio)`` marked rows, exactly ``L ratio`` when that is an integer: a rank's slice
    of the global batch has the same number of marked rows at every step (static shapes for
    ``torch.compile``).
    """
    position = torch.arange(n + 1, dtype=torch.float64) * ratio
    # ``i * ratio`` can round just below the integer it is (180 * 0.35 = 62.99...): at phase 0
    # a slice would then hold one marked row fewer, and the next one more.
    position = torch.where((position - position.round()).abs() < 1e-9, position.round(), position)
    return (position + phase).floor().diff() > 0


def _host_uniform(device, generator=None) -> float:
    """One uniform draw in [0, 1) as a Python float, without waiting for the GPU.

    On the CPU it is a draw of ``generator``. A CUDA generator keeps its state (seed and
    Philox offset) on the host, and each of its draws moves the offset: here the value is a
    CPU draw seeded by that state. So it changes whenever the generator has drawn since, is
    the same on every rank whose generator is in the same state, and costs no ``.item()`` on
    the GPU (a sync that would stall the next step's launches).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return torch.rand((), generator=generator).item()
    if generator is None:
        generator = torch.cuda.default_generators[
            device.index if device.index is not None else torch.cuda.current_device()
        ]
    seed = generator.initial_seed() * 1_000_003 + generator.get_offset()
    return torch.rand((), generator=torch.Generator().manual_seed(seed % 2**63)).item()


def _to(index: Tensor, device) -> Tensor:
    """A host index tensor on ``device`` without a stream sync (pinned, asynchronous copy)."""
    if torch.device(device).type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index.to(device)


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, 1, 1)`` in ``like``'s dtype."""
    return t.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class _Objective:
    def __init__(self, time_mean, time_std, class_dropout):
        _check_number("time_mean", time_mean)
        _check_number("time_std", time_std)
        if time_std <= 0:
            raise ValueError(f"time_std must be > 0, got {time_std!r}")
        _check_unit("class_dropout", class_dropout)
        self.time_mean, self.time_std, self.class_dropout = float(time_mean), float(time_std), class_dropout

    def _times(self, x, generator):
        return logit_normal(
            x.shape[0], self.time_mean, self.time_std, x.device, generator, accumulation_dtype(x)
        )

    def _noise_and_drop(self, x, generator):
        """The noise ``e`` (like ``x``) and the class-dropout mask ``(B,)``, drawn after the times."""
        e = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        drop = torch.rand(x.shape[0], device=x.device, generator=generator) < self.class_dropout
        return e, drop

    @staticmethod
    def _rows(noise: dict, rows) -> dict:
        """The draws of the rows ``rows`` (a slice of the batch) only."""
        if rows is None:
            return noise
        if not isinstance(rows, slice):
            raise TypeError(f"rows must be a slice of the batch or None, got {type(rows).__name__}")
        return {k: v[rows] for k, v in noise.items()}

    @staticmethod
    def _check_batch(x, y, noise):
        """``x``, ``y`` and the draws must describe the same rows."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise TypeError("x must be a floating-point (batch, ...) tensor of data")
        if x.shape[0] == 0:  # a mean over no rows: NaN, or no parts to concatenate
            raise ValueError(f"x must hold at least one row, got shape {tuple(x.shape)}")
        if y is not None and (not isinstance(y, Tensor) or tuple(y.shape) != (x.shape[0],)):
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"y must hold one label per row of x, shape ({x.shape[0]},), got {shape}")
        if noise is None:
            return
        missing = [key for key in ("t", "r", "e", "drop") if key not in noise]
        if missing:
            raise ValueError(f"noise lacks {missing}: give the dict that sample_noise returns")
        if noise["e"].shape != x.shape:
            got = tuple(noise["e"].shape)
            raise ValueError(f"noise['e'] must have x's shape {tuple(x.shape)}, got {got}")
        for key in ("t", "r", "drop"):
            if tuple(noise[key].shape) != (x.shape[0],):
                got = tuple(noise[key].shape)
                raise ValueError(
                    f"noise[{key!r}] must have shape ({x.shape[0]},) (one per row of x), got {got}"
                )

    def _labels(self, model, y, drop):
        """Rows in ``drop`` get the null label (classifier-free guidance training)."""
        if y is None:
            return None
        # Checked before the null label hides a bad one, which the model then never sees.
        null = model.null_class
        if null and not y.is_floating_point():
            check_cpu_labels(y, null)
        return torch.where(drop, torch.full_like(y, null), y)


def dual_jvp(model, z, r, t, y, v):
    """``(u, du/dt)`` in one dual pass of the DiT (``model.jvp``): the engine's way."""
    return model.jvp(z, r, t, y, v)


def func_jvp(model, z, r, t, y, v):
    """``(u, du/dt)`` by ``torch.func.jvp`` through ``model(z, r, t, y)``, tangent ``(v, 0, 1)``.

    For models without a dual pass, and to compare against the way public MeanFlow code does
    it. Slower, and attention inside must not use SDPA's fused kernels (no forward-mode AD):
    run it under :func:`meanflow.models.unfused_attention` (or ``sdpa_kernel(SDPBackend.MATH)``,
    whose backward fails under CUDA bf16 autocast in torch 2.11).
    """
    return torch.func.jvp(
        lambda z_, r_, t_: model(z_, r_, t_, y), (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t))
    )


class MeanFlowLoss(_Objective):
    """MeanFlow (Geng et al. 2025), exactly docs/design.md section 1 steps 1-6.

    Arguments: ``time_mean, time_std`` of the logit-normal for ``t`` and ``r``;
    ``ratio_r_neq_t``: fraction of rows that keep ``r != t`` (the rest get ``r = t``);
    ``adaptive_p, adaptive_c``: weight ``1 / stopgrad(l + c)^p`` on the per-sample squared
    error ``l``; ``cfg_w, cfg_k``: guidance folded into the target,
    ``v_g = w v + (1 - w - k) u(z, t, t, null) + k u(z, t, t, y)`` for ``cfg_t_min <= t <=
    cfg_t_max`` (``w = 1, k = 0`` is plain conditional MeanFlow, with no extra passes; else
    one batched no-grad pass in eval mode, of the values with a nonzero weight: ``k = 0``, the
    MeanFlow paper's main-text form, needs no conditional value, ``w + k = 1`` no null one);
    ``class_dropout``: fraction of rows trained with the null label and ``v_g = v``;
    ``jvp``: how ``(u, du/dt)`` is computed, ``jvp(model, z, r, t, y, v)``: :func:`dual_jvp`
    (default) or :func:`func_jvp` (any model, slower); ``tangent_rows``: ``"r_neq_t"`` (default)
    runs it only on the rows with ``r != t`` that :meth:`sample_noise` lists, and a plain
    forward on the others, whose target ``v_g - 0 * du/dt`` needs no tangent: the same loss
    for a quarter of the tangent work; ``"all"`` runs it on the whole batch, as public
    MeanFlow code does (also what happens with a ``noise`` that lists no rows).

    A model whose train and eval modes compute the same function (no dropout, no batch
    statistics) may say so with ``same_in_train_and_eval = True``, as the DiT does: the
    forward on the rows with ``r = t`` then also gives their ``u(z, t, t, y)``, and the
    guidance pass shrinks from 2 batches of rows to ``1 + ratio_r_neq_t``.
    """

    def __init__(
        self,
        time_mean: float = -0.4,
        time_std: float = 1.0,
        ratio_r_neq_t: float = 0.25,
        adaptive_p: float = 1.0,
        adaptive_c: float = 1e-3,
        cfg_w: float = 1.0,
        cfg_k: float = 0.5,
        cfg_t_min: float = 0.0,
        cfg_t_max: float = 1.0,
        class_dropout: float = 0.1,
        jvp=dual_jvp,
        tangent_rows: str = "r_neq_t",
    ):
        super().__init__(time_mean, time_std, class_dropout)
        if not callable(jvp):
            raise TypeError(f"jvp must be a function (model, z, r, t, y, v) -> (u, du/dt), got {jvp!r}")
        self.jvp = jvp
        if tangent_rows not in ("r_neq_t", "all"):
            raise ValueError(f"tangent_rows must be 'r_neq_t' or 'all', got {tangent_rows!r}")
        self.tangent_rows = tangent_rows
        _check_unit("ratio_r_neq_t", ratio_r_neq_t)
        _check_unit("cfg_t_min", cfg_t_min)
        _check_unit("cfg_t_max", cfg_t_max)
        if cfg_t_min > cfg_t_max:
            raise ValueError(f"cfg_t_min ({cfg_t_min}) must be <= cfg_t_max ({cfg_t_max})")
        for name, value in (
            ("adaptive_p", adaptive_p),
            ("adaptive_c", adaptive_c),
            ("cfg_w", cfg_w),
            ("cfg_k", cfg_k),
        ):
            _check_number(name, value)
        if adaptive_p < 0:
            raise ValueError(f"adaptive_p must be >= 0, got {adaptive_p!r}")
        if adaptive_c <= 0:
            raise ValueError(f"adaptive_c must be > 0, got {adaptive_c!r}")
        if cfg_k >= 1:
            raise ValueError(f"cfg_k must be < 1 (effective scale w / (1 - k)), got {cfg_k}")
        self.ratio_r_neq_t = ratio_r_neq_t
        self.adaptive_p, self.adaptive_c = float(adaptive_p), float(adaptive_c)
        self.cfg_w, self.cfg_k = float(cfg_w), float(cfg_k)
        self.cfg_t_min, self.cfg_t_max = float(cfg_t_min), float(cfg_t_max)

    @property
    def guided(self) -> bool:
        return self.cfg_w != 1.0 or self.cfg_k != 0.0

    def sample_noise(self, x: Tensor, generator=None, rows: slice | None = None) -> dict[str, Tensor]:
        """Step 1's times, the noise ``e`` and the class-dropout mask, for a batch like ``x``.

        The rows that keep ``r != t`` are spread evenly over the batch from a random phase
        (:func:`spread_rows`). ``tangent_rows`` and ``plain_rows`` index the rows with
        ``r != t`` and ``r = t``: the loss runs the dual pass on the first only. ``rows``: a
        data-parallel rank's slice of the batch; the draws are those of the whole batch, so
        the union of the ranks' slices is the same for any number of ranks.
        """
        b, device = x.shape[0], x.device
        t = self._times(x, generator)
        r = self._times(x, generator)
        t, r = torch.maximum(t, r), torch.minimum(t, r)
        # The rows are chosen on the host: index tensors of a shape fixed per rank.
        keep = spread_rows(b, self.ratio_r_neq_t, _host_uniform(device, generator))
        r = torch.where(_to(keep, device), r, t)
        e, drop = self._noise_and_drop(x, generator)
        noise = self._rows({"t": t, "r": r, "e": e, "drop": drop}, rows)
        keep = keep if rows is None else keep[rows]
        noise["tangent_rows"] = _to(keep.nonzero().flatten(), device)
        noise["plain_rows"] = _to((~keep).nonzero().flatten(), device)
        return noise

    def _guidance_values(self, model, z, t, y, cond_rows=None):
        """Step 3's network values, no grad, in eval mode, as one batched pass:
        ``u(z, t, t, null)`` on every row and ``u(z, t, t, y)`` on ``cond_rows`` (every row
        when None). A value whose weight in ``v_g`` is zero (``1 - w - k`` or ``k``) is not
        computed and comes back as None."""
        if y is None or not self.guided:
            return None, None
        inputs = {}  # (z, t, label) per value, run as one batch
        if self._null_weight:
            inputs["null"] = z, t, torch.full_like(y, model.null_class)
        if self.cfg_k:
            inputs["cond"] = (z, t, y) if cond_rows is None else (z[cond_rows], t[cond_rows], y[cond_rows])
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                zs, ts, ys = (torch.cat(a) for a in zip(*inputs.values()))
                u = model(zs, ts, ts, ys).split([zi.shape[0] for zi, _, _ in inputs.values()])
        finally:  # a caller that catches the error goes on training a model in train mode
            model.train(was_training)
        values = dict(zip(inputs, u))
        return values.get("null"), values.get("cond")

    @property
    def _null_weight(self) -> float:
        weight = 1 - self.cfg_w - self.cfg_k
        # w = 0.7, k = 0.3 leaves 5.6e-17, not 0: a weight below any float's resolution of
        # v_g is no reason for a pass.
        return 0.0 if abs(weight) < 1e-12 else weight

    def _guided_velocity(self, v, t, drop, u_null, u_cond):
        """Step 3: ``v_g`` from the guidance values (``v`` without guidance, on dropped rows
        and outside the window); a value of zero weight may be None."""
        if u_null is None and u_cond is None:
            return v
        v_cfg = self.cfg_w * v
        if u_null is not None:
            v_cfg = v_cfg + self._null_weight * u_null.to(v.dtype)
        if u_cond is not None:
            v_cfg = v_cfg + self.cfg_k * u_cond.to(v.dtype)
        use = ~drop & (t >= self.cfg_t_min) & (t <= self.cfg_t_max)
        return torch.where(use.view(-1, *([1] * (v.dim() - 1))), v_cfg, v)

    def _dual_rows(self, model, z, r, t, y, v_g):
        """Steps 4-5: ``u`` and its stop-gradient target by one dual pass."""
        u, dudt = self.jvp(model, z, r, t, y, v_g)
        return u, (v_g - _bcast((t - r).clamp(0, 1), v_g) * dudt.to(v_g.dtype)).detach()

    def __call__(self, model, x: Tensor, y: Tensor | None, generator=None, noise=None):
        """``(loss, stats)``; ``noise`` (from :meth:`sample_noise`) overrides the draws."""
        self._check_batch(x, y, noise)
        n = self.sample_noise(x, generator) if noise is None else noise
        t, r, e, drop = n["t"], n["r"], n["e"], n["drop"]
        tb = _bcast(t, x)
        z = (1 - tb) * x + tb * e
        v = e - x
        labels = self._labels(model, y, drop)
        if self.tangent_rows == "all" or "tangent_rows" not in n:
            v_g = self._guided_velocity(v, t, drop, *self._guidance_values(model, z, t, y))
            u, u_tgt = self._dual_rows(model, z, r, t, labels, v_g)
        else:
            rows = n["tangent_rows"], n["plain_rows"]
            u, u_tgt = self._split_rows(model, z, r, t, v, y, labels, drop, *rows)
        acc = accumulation_dtype(u)
        err = u.to(acc) - u_tgt.to(acc)
        sq = err.square().flatten(1).sum(1)  # per-sample l
        weight = 1.0 / (sq.detach() + self.adaptive_c).pow(self.adaptive_p)
        loss = (weight * sq).mean()
        stats = {"loss": loss.detach(), "mse": err.detach().square().mean(), "l": sq.detach().mean()}
        return loss, stats

    def _split_rows(self, model, z, r, t, v, y, labels, drop, dual, plain):
        """``(u, u_tgt)``: a dual pass on the rows ``dual`` (``r != t``) and a plain training
        forward on the rows ``plain`` (``r = t``), whose target ``v_g - 0 * du/dt`` needs no
        tangent. The two groups are concatenated: the loss is a mean over rows.

        With ``model.same_in_train_and_eval`` that forward, ``u(z, t, t, y)`` on the rows not
        dropped, is also their conditional guidance value (detached): the guidance pass
        computes it on the dual rows only.
        """
        reuse = getattr(model, "same_in_train_and_eval", False)
        u_null, u_cond = self._guidance_values(model, z, t, y, cond_rows=dual if reuse else None)

        def take(i, *tensors):
            return [None if a is None else a[i] for a in tensors]

        parts = []
        if dual.shape[0] > 0:
            zi, ri, ti, vi, yi, di, ni = take(dual, z, r, t, v, labels, drop, u_null)
            ci = u_cond if reuse else take(dual, u_cond)[0]
            parts.append(self._dual_rows(model, zi, ri, ti, yi, self._guided_velocity(vi, ti, di, ni, ci)))
        if plain.shape[0] > 0:
            zi, ri, ti, vi, yi, di, ni = take(plain, z, r, t, v, labels, drop, u_null)
            u = model(zi, ri, ti, yi)
            # On a dropped row the forward saw the null label, but v_g = v there anyway.
            ci = u.detach() if reuse and u_cond is not None else take(plain, u_cond)[0]
            parts.append((u, self._guided_velocity(vi, ti, di, ni, ci)))
        return (torch.cat(group) for group in zip(*parts))


class FlowMatchingLoss(_Objective):
    """Plain flow matching, the baseline: ``u(z, t, t)`` regressed on ``v`` (mean squared error).

    Same logit-normal times and class dropout as :class:`MeanFlowLoss`; no JVP.
    """

    def __init__(self, time_mean: float = -0.4, time_std: float = 1.0, class_dropout: float = 0.1):
        super().__init__(time_mean, time_std, class_dropout)

    def sample_noise(self, x: Tensor, generator=None, rows: slice | None = None) -> dict[str, Tensor]:
        """Times, noise and class-dropout mask for a batch like ``x``; ``rows`` as in MeanFlowLoss."""
        t = self._times(x, generator)
        e, drop = self._noise_and_drop(x, generator)
        return self._rows({"t": t, "r": t, "e": e, "drop": drop}, rows)

    def __call__(self, model, x: Tensor, y: Tensor | None, generator=None, noise=None):
        self._check_batch(x, y, noise)
        n = self.sample_noise(x, generator) if noise is None else noise
        t, e = n["t"], n["e"]
        tb = _bcast(t, x)
        z = (1 - tb) * x + tb * e
        u = model(z, t, t, self._labels(model, y, n["drop"]))
        acc = accumulation_dtype(u)
        mse = (u.to(acc) - (e - x).to(acc)).square().mean()
        return mse, {"loss": mse.detach(), "mse": mse.detach()}


OBJECTIVES = {"meanflow": MeanFlowLoss, "flow_matching": FlowMatchingLoss}


class LossModule(nn.Module):
    """``forward(x, y, noise) -> (loss, stats)``: the whole loss as one module call.

    ``model.jvp`` is not ``model.forward``, so a DDP wrapper around the model would never see
    the JVP pass (no gradient synchronisation). Wrapping THIS module in DDP (and in
    ``torch.compile``) puts the entire step, guidance passes and JVP included, under it.
    """

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x, y, noise):
        return self.objective(self.model, x, y, noise=noise)
