"""The DiT's one-pass ``model.jvp`` against ``torch.func.jvp`` of its plain ``forward``
(math attention), in float64, on awkward configurations; gradients through the dual path
against plain autograd; and clear errors for bad input."""

import pytest
import torch
from numerics import rel_err
from torch.nn.attention import SDPBackend, sdpa_kernel

from meanflow import PRESETS, DiT, DiTConfig, models
from meanflow.models import unfused_attention

F64 = torch.float64


def randomise(model, std=0.05):
    """adaLN-Zero starts with a zero output; give every weight a value so the check means something."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


def make(backend="reference", **overrides):
    cfg = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=64, depth=2, num_heads=2, num_classes=5)
    return randomise(DiT(DiTConfig(**{**cfg, **overrides}), backend=backend).to(F64))


def inputs(model, batch):
    c = model.config
    z = torch.randn(batch, c.in_channels, c.input_size, c.input_size, dtype=F64)
    t = torch.rand(batch, dtype=F64)
    r = t * torch.rand(batch, dtype=F64)
    y = torch.randint(0, c.num_classes + 1, (batch,)) if c.num_classes else None
    return z, r, t, y, torch.randn_like(z)


def func_jvp(model, z, r, t, y, z_dot, r_dot, t_dot):
    with sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(lambda z, r, t: model(z, r, t, y), (z, r, t), (z_dot, r_dot, t_dot))


def assert_rel(actual, expected, tol=1e-10):
    err = rel_err(actual, expected)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


CASES = {
    "head_dim_72": dict(hidden_size=144, num_heads=2),
    "25_tokens": dict(input_size=10),  # 5 x 5 patches: not a multiple of 16
    "r_t_conditioning": dict(time_cond="r,t"),
    "qk_norm": dict(qk_norm=True),
    "patch_4_unconditional": dict(patch_size=4, input_size=16, num_classes=0),
}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_jvp_matches_torch_func(case, batch):
    model = make(**CASES[case])
    z, r, t, y, v = inputs(model, batch)
    u, dudt = model.jvp(z, r, t, y, v)
    ref_u, ref_dudt = func_jvp(model, z, r, t, y, v, torch.zeros_like(r), torch.ones_like(t))
    assert_rel(u, ref_u)
    assert_rel(dudt, ref_dudt)
    assert not dudt.requires_grad


@pytest.mark.parametrize("qk_norm", [False, True])
def test_unfused_attention_is_the_same_function(qk_norm):
    """Attention in plain ops (what torch.func.jvp needs, with no SDPA backend chosen) gives the
    plain forward and model.jvp's tangent; the switch is put back, also after an error."""
    model = make(qk_norm=qk_norm)
    z, r, t, y, v = inputs(model, 3)
    u, dudt = model.jvp(z, r, t, y, v)
    fused = model(z, r, t, y)
    with unfused_attention(model):
        assert not any(block.attn.fused_attn for block in model.blocks)
        assert_rel(model(z, r, t, y), fused)
        u_func, dudt_func = torch.func.jvp(
            lambda z, r, t: model(z, r, t, y), (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t))
        )
    assert_rel(u_func, u)
    assert_rel(dudt_func, dudt)
    assert all(block.attn.fused_attn for block in model.blocks)
    with pytest.raises(RuntimeError, match="inside"), unfused_attention(model):
        raise RuntimeError("inside")
    assert all(block.attn.fused_attn for block in model.blocks)


@pytest.mark.parametrize("fused_bias_gelu", [True, False], ids=["fused-bias-gelu", "aten-linear-gelu"])
def test_plain_forward_is_the_dual_pass_value(monkeypatch, fused_bias_gelu):
    """Both MLP paths of the plain forward (our fused bias + GELU kernel, the CPU's; ATen's
    Linear + tanh GELU, a GPU's) compute the function whose value ``model.jvp`` gives."""
    monkeypatch.setattr(models, "FUSED_BIAS_GELU_DEVICES", frozenset({"cpu"} if fused_bias_gelu else ()))
    model = make()
    z, r, t, y, v = inputs(model, 3)
    u, _ = model.jvp(z, r, t, y, v)
    with torch.no_grad():
        assert_rel(model(z, r, t, y), u, 1e-12)


@pytest.mark.gpu
def test_plain_forward_on_cuda_is_the_dual_pass_value():
    """On a GPU in float32 (our kernels' fp32 matmuls are IEEE): the plain forward, ATen's
    Linear + GELU and SDPA, against ``model.jvp``'s value from our kernels."""
    torch.manual_seed(0)
    model = make(backend=None, hidden_size=144, num_heads=2)
    z, r, t, y, v = inputs(model, 4)
    model = model.float().cuda()
    z, r, t, v = (a.float().cuda() for a in (z, r, t, v))
    with torch.no_grad():
        u, _ = model.jvp(z, r, t, y.cuda(), v)
        assert_rel(model(z, r, t, y.cuda()), u, 1e-5)


def test_null_labels_and_general_tangent():
    """All-null labels (the CFG class) and a tangent that moves r too."""
    model = make()
    z, r, t, _, v = inputs(model, 2)
    y = torch.full((2,), model.null_class)
    r_dot, t_dot = torch.randn(2, dtype=F64), torch.randn(2, dtype=F64)
    u, du = model.jvp(z, r, t, y, v, r_dot=r_dot, t_dot=t_dot)
    ref_u, ref_du = func_jvp(model, z, r, t, y, v, r_dot, t_dot)
    assert_rel(u, ref_u)
    assert_rel(du, ref_du)


def test_dudt_is_the_total_time_derivative():
    """du/dt along (v, 0, 1) is d/ds u(z + s v, r, t + s) at s = 0 (central difference)."""
    model = make()
    z, r, t, y, v = inputs(model, 2)
    _, dudt = model.jvp(z, r, t, y, v)
    h = 1e-6
    with torch.no_grad():
        fd = (model(z + h * v, r, t + h, y) - model(z - h * v, r, t - h, y)) / (2 * h)
    assert_rel(dudt, fd, 1e-6)


def test_gradients_through_dual_path_equal_autograd():
    model = make()
    z, r, t, y, v = inputs(model, 2)
    weights = torch.randn_like(z)
    u, _ = model.jvp(z, r, t, y, v)
    grads = torch.autograd.grad((u * weights).sum(), list(model.parameters()))
    ref = torch.autograd.grad((model(z, r, t, y) * weights).sum(), list(model.parameters()))
    for (name, _), g, rg in zip(model.named_parameters(), grads, ref):
        assert torch.allclose(g, rg, rtol=1e-9, atol=1e-12), name


def test_adaln_zero_init_gives_zero_output():
    model = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=1, num_heads=2))
    z = torch.randn(2, 3, 8, 8)
    u, dudt = model.jvp(z, 0.2, 0.7, torch.tensor([0, 1]), torch.randn_like(z))
    assert torch.count_nonzero(u) == 0 and torch.count_nonzero(dudt) == 0
    assert model.y_embedder.embedding_table.num_embeddings == model.config.num_classes + 1


def test_presets():
    for name, (depth, hidden, patch, heads) in [
        ("DiT-XL/2", (28, 1152, 2, 16)),
        ("DiT-B/4", (12, 768, 4, 12)),
    ]:
        assert PRESETS[name] == (depth, hidden, patch, heads)
    model = DiT.from_config("DiT-S/2", num_classes=10, in_channels=4, input_size=32)
    assert (model.config.depth, model.config.hidden_size, model.config.num_heads) == (12, 384, 6)
    assert len(model.blocks) == 12 and model.x_embedder.proj.out_channels == 384


def test_bfloat16_autocast_jvp_runs():
    model = make().float()
    z, r, t, y, v = (a.float() if a is not None and a.is_floating_point() else a for a in inputs(model, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u, dudt = model.jvp(z, r, t, y, v)
    ref_u, ref_dudt = model.jvp(z, r, t, y, v)
    assert torch.isfinite(dudt).all()
    assert_rel(u.float(), ref_u, 5e-2)
    assert_rel(dudt.float(), ref_dudt, 5e-2)


def test_jvp_takes_times_of_another_dtype_than_z():
    """Times keep their own dtype, as the loss draws them (float32 for 16-bit data): the
    default tangents follow the times, and the jvp is that of the forward on those times."""
    model = make()
    z, r, t, y, v = inputs(model, 3)
    r32, t32 = r.float(), t.float()
    u, dudt = model.jvp(z, r32, t32, y, v)
    ref_u, ref_dudt = func_jvp(model, z, r32, t32, y, v, torch.zeros_like(r32), torch.ones_like(t32))
    assert u.dtype == dudt.dtype == F64
    assert_rel(u, ref_u, 1e-12)
    assert_rel(dudt, ref_dudt, 1e-6)  # the time embeddings and their tangents run in float32
    low = model.to(torch.bfloat16)
    z16, v16 = z.to(torch.bfloat16), v.to(torch.bfloat16)
    u16, dudt16 = low.jvp(z16, r32, t32, y, v16)
    assert u16.dtype == dudt16.dtype == torch.bfloat16 and torch.isfinite(dudt16).all()
    assert_rel(u16, low(z16, r32, t32, y), 3e-2)


def test_number_times_are_float32_for_16_bit_models():
    """A Python time is the float32 time the loss and the sampler would pass, not a bf16 one."""
    model = make().to(torch.bfloat16)
    z, _, _, y, _ = inputs(model, 2)
    z = z.to(torch.bfloat16)
    full = [torch.full((2,), v, dtype=torch.float32) for v in (0.3, 0.7)]
    assert torch.equal(model(z, 0.3, 0.7, y), model(z, *full, y))


# ------------------------------------------------------------------- bad input


def test_bad_preset_name():
    with pytest.raises(ValueError, match="unknown DiT preset 'DiT-M/2'"):
        DiT.from_config("DiT-M/2")


def test_bad_config_values():
    with pytest.raises(ValueError, match="time_cond"):
        DiTConfig(time_cond="t,r")
    with pytest.raises(ValueError, match="num_heads"):
        DiTConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="hidden_size 54 is not a multiple of 4"):
        DiTConfig(hidden_size=54, num_heads=3)  # heads of 18, but 2-D positions need 4 | hidden
    for field in ("patch_size", "num_heads", "depth", "input_size"):
        with pytest.raises(ValueError, match=f"{field} must be an int >= 1, got 0"):
            DiTConfig(**{field: 0})
    with pytest.raises(ValueError, match="mlp_ratio"):
        DiTConfig(mlp_ratio=0.0)
    with pytest.raises(TypeError, match="unknown DiTConfig fields"):
        DiT.from_config("DiT-S/2", hiden_size=3)
    with pytest.raises(ValueError, match="backend must be one of"):
        DiT.from_config("DiT-S/2", backend="fast")


@pytest.mark.parametrize(
    "field, values",
    [
        ("qk_norm", ["false", 1, None]),
        ("time_scale", [float("nan"), float("inf"), 0, -5.0, "1000", None, True]),
        ("num_classes", [2.5, None, "10", True, -1]),
        ("mlp_ratio", [float("nan"), float("inf"), True, "4"]),
    ],
)
def test_config_types_and_ranges(field, values):
    """Values that used to be accepted (qk_norm "false" switched qk-norm on, a NaN time scale
    gave NaN outputs) or failed later with an error that did not name the field."""
    for value in values:
        with pytest.raises(ValueError, match=f"{field} must be"):
            DiTConfig(hidden_size=32, num_heads=2, depth=1, **{field: value})
    DiTConfig(hidden_size=32, num_heads=2, depth=1, time_scale=1, num_classes=0, mlp_ratio=2)


def test_bad_inputs():
    model = make()
    z, r, t, y, v = inputs(model, 2)
    with pytest.raises(ValueError, match="z_dot must have the shape of z"):
        model.jvp(z, r, t, y, v[:1])
    with pytest.raises(TypeError, match="z_dot must match z's dtype"):
        model.jvp(z, r, t, y, v.float())
    with pytest.raises(ValueError, match="z must have shape"):
        model(z[:, :2], r, t, y)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(z, r, t[:1], y)
    with pytest.raises(TypeError, match="y must be an integer tensor"):
        model(z, r, t, y.double())
    n = model.config.num_classes
    for bad in (torch.tensor([0, n + 1]), torch.tensor([-1, 0])):
        with pytest.raises(ValueError, match=rf"class labels in \[0, {n - 1}\] \(or {n}, the null label\)"):
            model(z, r, t, bad)
    model(z, r, t, torch.tensor([0, n]))  # the null label is a label
    with pytest.raises(ValueError, match="y must be None"):
        make(num_classes=0)(z, r, t, y)


def test_z_of_another_dtype_than_the_model():
    model = make()
    z, r, t, y, v = inputs(model, 2)
    with pytest.raises(
        TypeError, match="z has dtype torch.float32 but the model's parameters have torch.float64"
    ):
        model(z.float(), r, t, y)
    with pytest.raises(TypeError, match="z has dtype torch.float32"):
        model.jvp(z.float(), r, t, y, v.float())
    model = model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts the inputs itself
        assert model(z.to(torch.bfloat16), r, t, y).dtype == torch.bfloat16
