"""Input checks shared by the ops: a bad call raises a ValueError/TypeError naming the
argument before any kernel runs (docs/design.md section 3)."""

import math
import numbers

import torch


def check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")


def check_pair(name: str, primal, tangent) -> None:
    """A primal and its tangent must agree in shape, dtype and device."""
    check_tensor(name, primal)
    check_tensor(f"{name}_dot", tangent)
    if tangent.shape != primal.shape:
        raise ValueError(
            f"{name}_dot must have the shape of {name}: got {tuple(tangent.shape)} "
            f"for {name}_dot and {tuple(primal.shape)} for {name}"
        )
    if tangent.dtype != primal.dtype:
        raise TypeError(f"{name}_dot has dtype {tangent.dtype} but {name} has {primal.dtype}")
    if tangent.device != primal.device:
        raise ValueError(f"{name}_dot is on {tangent.device} but {name} is on {primal.device}")


def check_same_device(**tensors) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all tensors must be on one device: {listing}")


def check_same_dtype(**tensors) -> None:
    dtypes = {name: t.dtype for name, t in tensors.items() if t is not None}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{n} {d}" for n, d in dtypes.items())
        raise TypeError(f"all tensors must have one dtype: {listing}")


def check_feature_vector(name: str, vector, x) -> None:
    """A per-feature ``(x.shape[-1],)`` vector (a weight or a bias) on ``x``'s device."""
    if x.dim() < 1:
        raise ValueError(f"x must have a feature dimension for {name}, got a 0-d tensor")
    check_tensor(name, vector)
    if tuple(vector.shape) != (x.shape[-1],):
        raise ValueError(f"{name} must have shape ({x.shape[-1]},), got {tuple(vector.shape)}")
    check_same_device(**{"x": x, name: vector})


def check_modulation(name: str, vector, x) -> None:
    """Per-sample modulation vectors are ``(batch, dim)`` for ``x`` of ``(batch, tokens, dim)``."""
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, tokens, dim), got shape {tuple(x.shape)}")
    want = (x.shape[0], x.shape[2])
    if tuple(vector.shape) != want:
        raise ValueError(f"{name} must have shape (batch, dim) = {want}, got {tuple(vector.shape)}")


def broadcasts_to(shape, to) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``to`` (without ``to`` growing)."""
    return len(shape) <= len(to) and all(s in (1, t) for s, t in zip(shape[::-1], to[::-1]))


def requires_grad(t: torch.Tensor) -> bool:
    """``t.requires_grad`` as the autograd around ``torch.func.jvp`` sees it. Inside the jvp a
    tensor computed from a parameter (a learned attention bias) is a functorch wrapper whose own
    flag is False: read at face value, such a bias got no gradient and no error."""
    if not torch.compiler.is_compiling():
        while torch._C._functorch.is_functorch_wrapped_tensor(t):
            t = torch._C._functorch.get_unwrapped(t)
    return t.requires_grad


def check_attention_bias(bias, q, k) -> None:
    """An additive attention mask: float, broadcastable to ``(batch, heads, seq_q, seq_k)``,
    on q's device, without a gradient (the ops give it none)."""
    check_tensor("bias", bias)
    want = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    if not broadcasts_to(bias.shape, want):
        shape = tuple(bias.shape)
        raise ValueError(f"bias must broadcast to (batch, heads, seq_q, seq_k) = {want}, got {shape}")
    check_same_device(q=q, bias=bias)
    if requires_grad(bias):
        raise ValueError("bias requires grad, but attention_jvp gives it no gradient: pass bias.detach()")


def check_sdpa_mask_dtype(attn_mask, q) -> None:
    """SDPA's rule for a float ``attn_mask``: float32 or q's dtype. Refused here too, so that a
    mask that passes under a jvp does not fail in the model's plain forward (torch's SDPA)."""
    if not (isinstance(attn_mask, torch.Tensor) and attn_mask.is_floating_point()):
        return
    if isinstance(q, torch.Tensor) and attn_mask.dtype not in (torch.float32, q.dtype):
        raise TypeError(
            f"attn_mask must be bool, float32 or the query's dtype {q.dtype}, got {attn_mask.dtype} "
            f"(as F.scaled_dot_product_attention)"
        )


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_eps(value) -> None:
    """A normalisation's ``eps``: a number >= 0. Refused here for every backend alike: the
    csrc kernels refuse a negative or NaN one, where the others would return NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"eps must be a number, got {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"eps must be a number >= 0, got {value!r}")


def check_positive_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
