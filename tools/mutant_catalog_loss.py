"""The catalog's mutants of the MeanFlow loss (``meanflow/loss.py``): the target, its JVP, the
guidance, the adaptive weight, the time draws and the rows that get the dual pass. At the
default adaptive weight the loss is ~1 whatever the target, so many are killed by
``tests/meanflow/test_loss_target.py``'s plain error against a float64 reference."""

from mutant import Mutant

__all__ = ["LOSS_MUTANTS"]

LOSS = (
    "tests/meanflow/test_loss_draws.py",
    "tests/meanflow/test_loss_time_range.py",
    "tests/meanflow/test_loss.py",
)
LOSS_INPUTS = ("tests/meanflow/test_loss_inputs.py",)
# What the default adaptive weight hides (the loss is ~1 whatever the target): each row's plain
# error against a float64 reference, the jvp's arguments, the gradients of weight and target.
LOSS_TARGET = "tests/meanflow/test_loss_target.py"
_LOSS_PY = "meanflow/loss.py"


def _target(name, find, replace, why, test=""):
    """A mutant of the loss killed by LOSS_TARGET (or by its test ``test``, "::name")."""
    return Mutant(name, _LOSS_PY, find, replace, (LOSS_TARGET + test,), why)


LOSS_MUTANTS = [
    # ---------------------------------------------------------------- meanflow/loss.py
    Mutant(
        "loss-gap-clamped-at-half",
        _LOSS_PY,
        "(t - r).clamp(0, 1)",
        "(t - r).clamp(0, 0.5)",
        LOSS,
        "target uses min(t - r, 0.5)",
    ),
    Mutant(
        "loss-target-sign", _LOSS_PY, "(v_g - _bcast(", "(v_g + _bcast(", LOSS, "target v + (t - r) du/dt"
    ),
    Mutant(
        "loss-target-not-detached",
        _LOSS_PY,
        "* dudt.to(v_g.dtype)).detach()",
        "* dudt.to(v_g.dtype))",
        LOSS,
        "no stop-gradient on the target",
    ),
    Mutant(
        "loss-interpolation-swapped",
        _LOSS_PY,
        "z = (1 - tb) * x + tb * e\n        v = e - x\n        labels",
        "z = tb * x + (1 - tb) * e\n        v = e - x\n        labels",
        LOSS,
        "t = 1 is data, not noise",
    ),
    Mutant(
        "loss-velocity-sign",
        _LOSS_PY,
        "v = e - x\n        labels",
        "v = x - e\n        labels",
        LOSS,
        "v = x - e",
    ),
    Mutant(
        "loss-adaptive-weight-not-detached",
        _LOSS_PY,
        "(sq.detach() + self.adaptive_c)",
        "(sq + self.adaptive_c)",
        LOSS,
        "gradient flows through the adaptive weight",
    ),
    Mutant(
        "loss-adaptive-c-dropped",
        _LOSS_PY,
        "(sq.detach() + self.adaptive_c).pow",
        "sq.detach().pow",
        LOSS,
        "weight 1 / l^p without c",
    ),
    Mutant(
        "loss-times-unordered",
        _LOSS_PY,
        "t, r = torch.maximum(t, r), torch.minimum(t, r)",
        "t, r = torch.minimum(t, r), torch.maximum(t, r)",
        LOSS,
        "r > t",
    ),
    Mutant(
        "loss-kept-rows-inverted",
        _LOSS_PY,
        "torch.where(_to(keep, device), r, t)",
        "torch.where(_to(keep, device), t, r)",
        LOSS,
        "ratio_r_neq_t of rows get r = t instead",
    ),
    Mutant(
        "loss-null-weight-sign",
        _LOSS_PY,
        "weight = 1 - self.cfg_w - self.cfg_k",
        "weight = 1 - self.cfg_w + self.cfg_k",
        LOSS,
        "v_g's null-label weight 1 - w + k",
    ),
    Mutant(
        "loss-guidance-window-strict",
        _LOSS_PY,
        "(t >= self.cfg_t_min) & (t <= self.cfg_t_max)",
        "(t > self.cfg_t_min) & (t < self.cfg_t_max)",
        LOSS,
        "window excludes its ends",
    ),
    Mutant(
        "loss-dropped-rows-guided",
        _LOSS_PY,
        "use = ~drop & (t",
        "use = (t",
        LOSS,
        "class-dropout rows get guidance too",
    ),
    Mutant(
        "loss-dropout-label-swapped",
        _LOSS_PY,
        "torch.where(drop, torch.full_like(y, null), y)",
        "torch.where(drop, y, torch.full_like(y, null))",
        LOSS,
        "kept rows get the null label",
    ),
    Mutant(
        "loss-spread-rows-all",
        _LOSS_PY,
        "(position + phase).floor().diff() > 0",
        "(position + phase).floor().diff() >= 0",
        LOSS,
        "every row keeps r != t",
    ),
    Mutant(
        "loss-spread-rows-unsnapped",
        _LOSS_PY,
        "torch.where((position - position.round()).abs() < 1e-9, position.round(), position)",
        "position",
        LOSS,
        "at phase 0, 180 * 0.35 = 62.99... marks 62 rows, not 63: a rank's row count changes",
    ),
    Mutant(
        "loss-time-mean-ignored",
        _LOSS_PY,
        "torch.sigmoid(mean + std * torch.randn(",
        "torch.sigmoid(std * torch.randn(",
        LOSS,
        "times drawn from logit-normal(0, std) whatever time_mean",
    ),
    Mutant(
        "loss-time-mean-std-swapped",
        _LOSS_PY,
        "x.shape[0], self.time_mean, self.time_std,",
        "x.shape[0], self.time_std, self.time_mean,",
        LOSS,
        "logit-normal(time_std, time_mean)",
    ),
    Mutant(
        "loss-row-phase-fixed-on-cpu",
        _LOSS_PY,
        "        return torch.rand((), generator=generator).item()\n",
        "        return 0.0\n",
        LOSS,
        "the same rows keep r != t at every step",
    ),
    Mutant(
        "loss-adaptive-c-constant",
        _LOSS_PY,
        "(sq.detach() + self.adaptive_c).pow(self.adaptive_p)",
        "(sq.detach() + 1e-3).pow(self.adaptive_p)",
        LOSS,
        "adaptive_c ignored: the weight's c is always the default",
    ),
    Mutant(
        "loss-option-nan-accepted",
        _LOSS_PY,
        "    if not math.isfinite(value):",
        "    if math.isinf(value):",
        LOSS_INPUTS,
        "a NaN time_mean, adaptive_c or cfg_w taken: every loss NaN without a word",
    ),
    Mutant(
        "loss-empty-batch-accepted",
        _LOSS_PY,
        "        if x.shape[0] == 0:",
        "        if False:",
        LOSS_INPUTS,
        "an empty batch fails inside the row split, or gives a NaN mean",
    ),
    Mutant(
        "loss-drop-shape-unchecked",
        _LOSS_PY,
        'for key in ("t", "r", "drop"):',
        'for key in ("t", "r"):',
        LOSS_INPUTS,
        "noise['drop'] of another batch size fails with a broadcast error from inside the step",
    ),
    # Killed by LOSS_TARGET, where the default adaptive weight hides nothing.
    _target(
        "loss-gap-dropped",
        "(v_g - _bcast((t - r).clamp(0, 1), v_g) * dudt",
        "(v_g - dudt",
        "target v_g - du/dt, without the factor (t - r)",
    ),
    _target(
        "loss-jvp-r-t-swapped",
        "self.jvp(model, z, r, t, y, v_g)",
        "self.jvp(model, z, t, r, y, v_g)",
        "the dual pass gets r for t and t for r",
    ),
    _target(
        "loss-tangent-sign",
        "self.jvp(model, z, r, t, y, v_g)",
        "self.jvp(model, z, r, t, y, -v_g)",
        "du/dt along (-v_g, 0, 1)",
    ),
    _target(
        "loss-func-jvp-t-tangent-zero",
        "torch.zeros_like(r), torch.ones_like(t))",
        "torch.zeros_like(r), torch.zeros_like(t))",
        "jvp=func_jvp: tangent (v, 0, 0), du/dt without its d_t u",
    ),
    _target(
        "loss-func-jvp-r-t-swapped",
        "(z, r, t), (v, torch.zeros_like(r)",
        "(z, t, r), (v, torch.zeros_like(r)",
        "jvp=func_jvp: the network at (z, t, r), the tangent 1 on r",
    ),
    _target(
        "loss-cond-weight-one-minus-k",
        "v_cfg + self.cfg_k * u_cond",
        "v_cfg + (1 - self.cfg_k) * u_cond",
        "v_g weighs u(z, t, t, y) by 1 - k (the same at the default k = 0.5)",
    ),
    _target(
        "loss-cfg-w-ignored",
        "v_cfg = self.cfg_w * v",
        "v_cfg = v",
        "v_g = v + (1 - w - k) u_null + k u_cond: w taken as 1",
    ),
    _target(
        "loss-guidance-values-at-r-zero",
        "u = model(zs, ts, ts, ys)",
        "u = model(zs, 0 * ts, ts, ys)",
        "guidance values u(z, 0, t) instead of u(z, t, t)",
    ),
    _target(
        "loss-plain-rows-unguided",
        "parts.append((u, self._guided_velocity(vi, ti, di, ni, ci)))",
        "parts.append((u, vi))",
        "the rows with r = t regress on v, not v_g",
    ),
    _target(
        "loss-dual-and-plain-rows-swapped",
        'rows = n["tangent_rows"], n["plain_rows"]',
        'rows = n["plain_rows"], n["tangent_rows"]',
        "the dual pass on the rows with r = t; the rows with r != t get the target v_g",
    ),
    _target(
        "loss-row-lists-shifted",
        "_to(keep.nonzero().flatten(), device)",
        "_to(keep.roll(1).nonzero().flatten(), device)",
        "the dual pass one row after each row with r != t, which gets the target v_g",
        "::test_unweighted_error_on_the_objectives_own_draws",
    ),
    _target(
        "loss-reused-guidance-not-detached",
        "ci = u.detach() if reuse",
        "ci = u if reuse",
        "a gradient through the target of the rows with r = t (their forward lent to guidance)",
        "::test_no_gradient_flows_through_the_guided_target",
    ),
]
