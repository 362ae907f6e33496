"""``DualOp``: in plain eager mode an op runs its implementation and autograd formula without
the dispatcher, elsewhere the registered ``torch.library`` op; both give the same values,
tangents and gradients (reference backend, float64)."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.utils._python_dispatch import TorchDispatchMode

import mfkernels

F64 = torch.float64


def rand(*shape):
    return torch.randn(*shape, dtype=F64)


def cases():
    """(op name, public call, primal inputs that take gradients, the other inputs)."""
    b, n, d = 2, 5, 8
    x, x_dot, f, f_dot = (rand(b, n, d) for _ in range(4))
    mod = [rand(b, d) for _ in range(4)]
    heads = [rand(b, 2, n, 4) for _ in range(6)]
    return [
        ("gated_residual_jvp", mfkernels.gated_residual_jvp, (x, mod[0], f), (x_dot, mod[1], f_dot)),
        ("layernorm_modulate_jvp", mfkernels.layernorm_modulate_jvp, (x, *mod[:2]), (x_dot, *mod[2:])),
        ("gelu_tanh_jvp", mfkernels.gelu_tanh_jvp, (x, rand(d)), (x_dot,)),
        ("silu_jvp", mfkernels.silu_jvp, (x,), (x_dot,)),
        ("attention_jvp", mfkernels.attention_jvp, tuple(heads[:3]), tuple(heads[3:])),
        ("rms_norm_jvp", mfkernels.rms_norm_jvp, (x, rand(d)), (x_dot,)),
    ]


def arrange(name, primals, others):
    """The public function's positional arguments."""
    if name == "gated_residual_jvp":
        (x, g, f), (x_dot, g_dot, f_dot) = primals, others
        return x, x_dot, g, g_dot, f, f_dot
    if name == "layernorm_modulate_jvp":
        (x, shift, scale), (x_dot, shift_dot, scale_dot) = primals, others
        return x, x_dot, shift, scale, shift_dot, scale_dot
    if name in ("gelu_tanh_jvp", "rms_norm_jvp"):
        (x, extra), (x_dot,) = primals, others
        return x, x_dot, extra
    if name == "silu_jvp":
        return primals[0], others[0]
    return (*primals, *others)


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def value_and_grads(fn, name, primals, others):
    primals = [p.detach().requires_grad_() for p in primals]
    outputs = fn(*arrange(name, primals, others))
    weights = torch.randn_like(outputs[0])
    grads = torch.autograd.grad((outputs[0] * weights).sum(), primals)
    return outputs, grads, type(outputs[0].grad_fn).__name__


@pytest.mark.parametrize("case", cases(), ids=lambda c: c[0])
def test_eager_path_matches_the_registered_op(case):
    name, public, primals, others = case
    torch.manual_seed(0)
    eager = value_and_grads(public, name, primals, others)
    torch.manual_seed(0)
    with RecordOps() as recorded:  # a dispatch mode: the call must go through the op
        through_op = value_and_grads(public, name, primals, others)
    assert f"mfkernels.{name}.default" in recorded.names
    assert eager[2] == f"mfkernels_{name}Backward", "eager calls skip the dispatcher"
    assert through_op[2].startswith("GeneratedBackwardFor_mfkernels"), through_op[2]
    for a, e in zip(eager[0] + eager[1], through_op[0] + through_op[1]):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    assert not eager[0][1].requires_grad, "the tangent takes no gradient"


def test_no_grad_calls_the_implementation_alone():
    x, x_dot = rand(2, 3, 8).requires_grad_(), rand(2, 3, 8)
    with torch.no_grad():
        y, y_dot = mfkernels.silu_jvp(x, x_dot)
    assert y.grad_fn is None and not y.requires_grad


def test_fake_tensors_take_the_registered_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, x_dot = torch.empty(2, 3, 8), torch.empty(2, 3, 8)
        y, y_dot = mfkernels.gelu_tanh_jvp(x, x_dot, torch.empty(8))
    assert y.shape == y_dot.shape == (2, 3, 8)
    assert type(y).__name__ == "FakeTensor"


@pytest.mark.parametrize("case", cases(), ids=lambda c: c[0])
def test_a_second_derivative_raises_instead_of_being_dropped(case):
    """The backward kernels have no derivative: a gradient penalty or a Hessian-vector product
    through an op would otherwise take its first derivative as a constant, silently."""
    name, public, primals, others = case
    primals = [p.detach().requires_grad_() for p in primals]
    out = public(*arrange(name, primals, others))[0]
    with pytest.raises(RuntimeError, match=f"mfkernels.{name}: no second derivative"):
        torch.autograd.grad(out.sum(), primals, create_graph=True)
    first = torch.autograd.grad(public(*arrange(name, primals, others))[0].sum(), primals)
    assert all(g.grad_fn is None for g in first)  # a first derivative as before


@pytest.mark.parametrize("transform", ["torch.func.jvp", "forward_ad"])
@pytest.mark.parametrize("case", cases(), ids=lambda c: c[0])
def test_a_forward_ad_tangent_on_an_input_is_refused(case, transform):
    """The ops have no forward-mode AD rule: a tangent carried by an input came back as zero
    tangents under torch.func.jvp and as none (a zero) under forward_ad, without a word, on
    the cpu and triton backends (the reference's raised torch's own unclear errors). The same
    call on tensors without a tangent inside the level runs, as the SDPA switch makes it."""
    name, public, primals, others = case
    first = "q" if name == "attention_jvp" else "x"

    def value(p):
        return public(*arrange(name, (p, *primals[1:]), others))[0]

    match = f"mfkernels.{name}: {first} carries a forward-mode AD tangent"
    with pytest.raises(NotImplementedError, match=match):
        if transform == "torch.func.jvp":
            torch.func.jvp(value, (primals[0],), (torch.ones_like(primals[0]),))
        else:
            with fwAD.dual_level():
                value(fwAD.make_dual(primals[0], torch.ones_like(primals[0])))
    with fwAD.dual_level():
        torch.testing.assert_close(value(primals[0]), public(*arrange(name, primals, others))[0])


@pytest.mark.parametrize("fullgraph", [False, True])
def test_a_forward_ad_tangent_is_refused_under_torch_compile_too(fullgraph):
    """Traced, torch.func.jvp through an op gave zero tangents as eagerly. With fullgraph dynamo
    reports the error as one it observed, naming ours."""
    x = rand(2, 3, 8)

    def jvp(x):
        return torch.func.jvp(lambda t: mfkernels.silu_jvp(t, t)[0], (x,), (torch.ones_like(x),))

    error = Exception if fullgraph else NotImplementedError
    with pytest.raises(error, match="mfkernels.silu_jvp: x carries a forward-mode AD tangent"):
        torch.compile(jvp, backend="aot_eager", fullgraph=fullgraph)(x)


@pytest.mark.parametrize("transform", ["grad", "vjp", "jacrev"])
def test_torch_func_gradients_of_an_op_are_refused_in_its_terms(transform):
    """torch cannot take torch.func gradients through a custom op: its own error spoke of an
    autograd.Function's setup_context. Tensors outside the transform that require grad (a
    module's parameters) and a constant input still run."""
    x, w = rand(2, 3, 8), rand(2, 3, 8).requires_grad_()

    def value(t):
        return mfkernels.silu_jvp(t, t)[0]

    run = {
        "grad": lambda: torch.func.grad(lambda t: value(t).sum())(x),
        "vjp": lambda: torch.func.vjp(value, x),
        "jacrev": lambda: torch.func.jacrev(value)(x[0, 0]),
    }[transform]
    with pytest.raises(NotImplementedError, match="mfkernels.silu_jvp: torch.func.grad, vjp and jacrev"):
        run()
    grad = torch.func.grad(lambda t: (t * value(w)).sum())(x)
    torch.testing.assert_close(grad, torch.nn.functional.silu(w.detach()))
