"""The row, pointwise and attention ops on the memory layouts users hand them, on every backend that runs
CPU tensors: value, tangent and gradients against autograd of the float64 oracle
(docs/design.md section 3). Each layout makes every operand a view the kernels cannot read as
a flat buffer, each in its own way: transposed, every other column, a stride-0 expansion (a
tangent ``zeros(1, 1, dim).expand(...)``, a conditioning vector broadcast over the batch), and
the incoming gradient as ``loss.sum()`` gives it (stride 0) or transposed. The launchers copy
what their kernels cannot take; a copy left out reads the wrong elements without an error."""

import warnings

import pytest
import torch
from numerics import assert_close

import mfkernels
from mfkernels import dispatch, reference

B, N, D = 2, 3, 8
HEADS, SEQ = 2, 5


def view(kind: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A float32 ``shape`` tensor (last dim ``D``) laid out as ``kind`` says."""
    lead, dim = shape[:-1], shape[-1]
    if kind == "transposed":  # the last dim is not unit stride
        if not lead:  # a vector's only dim
            return torch.randn(2 * dim, generator=generator)[::2]
        return torch.randn(*lead[:-1], dim, lead[-1], generator=generator).transpose(-1, -2)
    if kind == "every_other_column":
        return torch.randn(*lead, 2 * dim, generator=generator)[..., ::2]
    if kind == "expanded":  # stride 0 in every leading dim
        return torch.randn(*[1] * len(lead), dim, generator=generator).expand(shape)
    if kind == "zeros":
        return torch.zeros(*[1] * len(shape)).expand(shape)
    raise ValueError(kind)


# Per layout: primals, their tangents, per-sample vectors, (dim,) vectors, incoming gradient.
LAYOUTS = {
    "transposed": ("transposed", "expanded", "transposed", "every_other_column", "transposed"),
    "strided_columns": ("every_other_column", "transposed", "every_other_column", "transposed", "expanded"),
    "expanded": ("expanded", "zeros", "expanded", "expanded", "every_other_column"),
}


def case(op: str, layout: str):
    """``(public op, oracle, arguments, indices of the arguments that take gradients, gradient)``."""
    g = torch.Generator().manual_seed(0)
    primal, tangent, per_sample, per_feature, grad = LAYOUTS[layout]
    x, x_dot = view(primal, (B, N, D), g), view(tangent, (B, N, D), g)
    vectors = [view(per_sample, (B, D), g) for _ in range(4)]
    feature = view(per_feature, (D,), g)
    grad_out = view(grad, (B, N, D), g)
    heads = [view(kind, (B, HEADS, SEQ, D), g) for kind in [primal] * 3 + [tangent] * 3]
    bias = view(per_sample, (SEQ, SEQ), g)
    if op == "attention_jvp":
        return (
            lambda *a, backend=None: mfkernels.attention_jvp(*a, backend=backend, bias=bias),
            lambda *a: reference.attention_jvp(*a, bias=bias.double()),
            heads,
            (0, 1, 2),
            view(grad, (B, HEADS, SEQ, D), g),
        )
    return {
        "layernorm_modulate_jvp": (
            mfkernels.layernorm_modulate_jvp,
            reference.layernorm_modulate_jvp,
            (x, x_dot, *vectors),
            (0, 2, 3),
        ),
        "gated_residual_jvp": (
            mfkernels.gated_residual_jvp,
            reference.gated_residual_jvp,
            (x, x_dot, vectors[0], vectors[1], view(primal, (B, N, D), g), view(tangent, (B, N, D), g)),
            (0, 2, 4),
        ),
        "gelu_tanh_jvp": (mfkernels.gelu_tanh_jvp, reference.gelu_tanh_jvp, (x, x_dot, feature), (0, 2)),
        "silu_jvp": (mfkernels.silu_jvp, reference.silu_jvp, (x, x_dot), (0,)),
        "rms_norm_jvp": (mfkernels.rms_norm_jvp, reference.rms_norm_jvp, (x, x_dot, feature), (0, 2)),
    }[op] + (grad_out,)


def value_tangent_and_grads(fn, args, leaves, grad_out):
    """``fn``'s value and tangent and the gradients of ``<value, grad_out>``, each argument in
    ``leaves`` a leaf of its own layout."""
    args = [a.detach().requires_grad_() if i in leaves else a for i, a in enumerate(args)]
    value, tangent = fn(*args)[:2]
    grads = torch.autograd.grad(value, [args[i] for i in leaves], grad_out)
    return [value.detach(), tangent, *grads]


OPS = [
    "layernorm_modulate_jvp",
    "gated_residual_jvp",
    "gelu_tanh_jvp",
    "silu_jvp",
    "rms_norm_jvp",
    "attention_jvp",
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", sorted(mfkernels.available_backends("cpu")))
def test_value_tangent_and_gradients_on_views(backend, op, layout):
    public, oracle, args, leaves, grad_out = case(op, layout)
    if dispatch.lookup(op, backend) is None:
        pytest.skip(f"the {backend} backend has no {op}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "mfkernels")  # a backward the backend lacks runs the reference
        assert dispatch.resolve(op, backend, *args) == backend, "the op itself must run there"
        out = value_tangent_and_grads(lambda *a: public(*a, backend=backend), args, leaves, grad_out)
    ref = value_tangent_and_grads(oracle, [a.double() for a in args], leaves, grad_out.double())
    for name, o, r in zip(["value", "tangent", *(f"grad {i}" for i in leaves)], out, ref, strict=True):
        assert_close(f"{backend} {op} {layout}: {name}", o, r, torch.float32)
