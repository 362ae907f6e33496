"""What every dual op's registration and autograd formula share."""

import inspect
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD
from torch._C._functorch import TransformType
from torch.utils._python_dispatch import _get_current_dispatch_mode

_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def mark_tangent_outputs(ctx, *outputs):
    """The tangent outputs (and attention's LSE) take no gradient: the MeanFlow target is
    stop-gradient. Their incoming gradients are left as None instead of being materialised
    as zero tensors that every backward would allocate, fill and ignore."""
    ctx.mark_non_differentiable(*outputs)
    ctx.set_materialize_grads(False)


class DualOp:
    """One ``mfkernels::<name>`` custom op (``torch.library``), and how the package calls it.

    Wherever the op itself must be seen (``torch.compile`` and export, fake tensors and other
    dispatch modes, ``torch.func`` transforms, tensor subclasses) a call goes through the
    dispatcher. In plain eager mode it goes straight to ``impl``, under a
    ``torch.autograd.Function`` that runs the op's own ``setup_context`` and ``backward``: the
    same computation ~35 us a call sooner (2-3% of a DiT-T/4 training step on the CPU, and
    host time that a small DiT on a GPU waits for).
    """

    def __init__(
        self,
        name: str,
        impl: Callable,
        fake: Callable,
        setup_context: Callable | None = None,
        backward: Callable | None = None,
    ):
        self.name, self.impl = name, impl
        self.arg_names = list(inspect.signature(impl).parameters)
        self.op = torch.library.custom_op(f"mfkernels::{name}", impl, mutates_args=())
        self.op.register_fake(fake)
        self.function = None
        if backward is not None:
            self.op.register_autograd(backward, setup_context=setup_context)
            self.function = _eager_function(name, impl, setup_context, backward)

    def __call__(self, *args):
        if fwAD._current_level >= 0:  # torch.func.jvp and forward_ad.dual_level both enter one
            self._refuse_forward_ad_tangents(args)
        if not plain_eager(args):
            if torch.is_grad_enabled() and _any_requires_grad(args):
                self._refuse_functorch_grad(args)
            return self.op(*args)
        if self.function is not None and torch.is_grad_enabled() and _any_requires_grad(args):
            return self.function.apply(*args)
        return self.impl(*args)

    def _refuse_forward_ad_tangents(self, args):
        """The ops have no forward-mode AD rule: an input's tangent at the innermost forward-AD
        level would be dropped without a word (the outputs' tangents zero under
        ``torch.func.jvp``, absent under ``forward_ad``), compiled as eagerly."""
        if not torch.compiler.is_dynamo_compiling() and _get_current_dispatch_mode() is not None:
            return  # fake tensors (a custom op's fake implementation run while tracing) carry none
        for arg_name, a in zip(self.arg_names, args):
            if isinstance(a, torch.Tensor) and fwAD.unpack_dual(a).tangent is not None:
                raise NotImplementedError(
                    f"mfkernels.{self.name}: {arg_name} carries a forward-mode AD tangent "
                    "(torch.func.jvp or torch.autograd.forward_ad), which this op would drop: it has "
                    "no forward-AD rule. It computes the JVP itself: pass the tangents as its *_dot "
                    "arguments, or differentiate plain torch (mfkernels.reference) instead"
                )

    def _refuse_functorch_grad(self, args):
        """Under ``torch.func.grad``, ``vjp`` or ``jacrev`` torch cannot differentiate a custom op
        in the tensors those transforms track (the autograd.Function it registers has no
        ``setup_context``): said here, in our terms. Other tensors that require grad, and all
        under ``torch.func.jvp`` (the SDPA switch's calls), torch takes."""
        if torch.compiler.is_compiling():
            return
        if not any(i.key() == TransformType.Grad for i in torch._C._functorch.get_interpreter_stack() or ()):
            return
        tracked = torch._C._functorch.is_gradtrackingtensor
        if any(isinstance(a, torch.Tensor) and a.requires_grad and tracked(a) for a in args):
            raise NotImplementedError(
                f"mfkernels.{self.name}: torch.func.grad, vjp and jacrev cannot differentiate it (torch "
                "has no torch.func rule for a custom op's autograd): take its gradients with "
                "torch.autograd.grad or .backward()"
            )


def _eager_function(name, impl, setup_context, backward) -> type[torch.autograd.Function]:
    # forward(ctx, *args), not a Function with its own setup_context: that kind binds its
    # arguments through inspect.signature on every call (~35 us, as much as the dispatcher).
    def forward(ctx, *args):
        output = impl(*args)
        setup_context(ctx, args, output)
        return output

    def first_order_backward(ctx, *grads):
        # The backwards are kernels with no derivative of their own: a second derivative taken
        # through them (create_graph=True) would silently count them as constants.
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"mfkernels.{name}: no second derivative (a backward with create_graph=True): "
                "its backward kernel has none"
            )
        return backward(ctx, *grads)

    namespace = {"forward": staticmethod(forward), "backward": staticmethod(first_order_backward)}
    return type(f"mfkernels_{name}", (torch.autograd.Function,), namespace)


def plain_eager(args) -> bool:
    """Whether a call on ``args`` is plain eager mode: not traced by torch.compile, under no
    dispatch mode (fake tensors, FlopCounterMode) or torch.func transform, and on plain tensors."""
    if torch.compiler.is_compiling():
        return False
    if _get_current_dispatch_mode() is not None or torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    return all(type(a) in _PLAIN_TENSOR_TYPES for a in args if isinstance(a, torch.Tensor))


def _any_requires_grad(args) -> bool:
    return any(a.requires_grad for a in args if isinstance(a, torch.Tensor))
