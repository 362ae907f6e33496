"""Backend choice for every op: explicit argument, then ``MFK_BACKEND``, then auto.

Backends (docs/design.md section 2): ``reference`` (plain torch, any device, float64; the oracle),
``triton`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``), ``cuda`` and
``cpu`` (the csrc extension, where built). Auto picks ``triton`` for CUDA tensors, ``cpu``
for CPU tensors when the extension is built, else ``reference``. When the chosen backend
cannot run a call (not built, no such kernel, dtype or shape outside its support) the call
falls back, with a one-time warning, to the device's automatic backend if that one can run
it (``cuda`` has no attention kernel: attention then runs on ``triton``), else to
``reference``: never a crash.

Op family modules register their implementations here with :func:`register`; the custom
ops call :func:`implementation` inside their eager bodies, so the environment variable is
read at run time and never inside a ``torch.compile`` trace.
"""

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

BACKENDS = ("reference", "triton", "cuda", "cpu")
ENV_VAR = "MFK_BACKEND"


@dataclass(frozen=True)
class Implementation:
    fn: Callable
    # Returns None when the call is supported, else a short reason for the fallback warning.
    unsupported: Callable[..., str | None]


_registry: dict[tuple[str, str], Implementation] = {}
_warned: set[tuple[str, str, str]] = set()
_recorders: list[dict[str, set[str]]] = []


@contextlib.contextmanager
def record_backends():
    """Which backend each op dispatched while inside really ran on (after any fallback):
    ``{op: {backend, ...}}``, filled as calls resolve. Benchmarks use it to mark a timing whose
    ops did not all run on the backend it names."""
    seen: dict[str, set[str]] = {}
    _recorders.append(seen)
    try:
        yield seen
    finally:
        _recorders.remove(seen)


def check_backend(backend: str | None) -> str:
    """Validate a user-given backend name; ``None`` and ``""`` mean "not given"."""
    if backend in (None, ""):
        return ""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
    return backend


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for by argument or ``MFK_BACKEND``; ``"auto"`` when neither."""
    if check_backend(backend):
        return backend
    name = os.environ.get(ENV_VAR, "").strip() or "auto"
    if name not in (*BACKENDS, "auto"):
        raise ValueError(f"{ENV_VAR} must be one of {('auto', *BACKENDS)}, got {name!r}")
    return name


def auto_backend(device: torch.device) -> str:
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu" and ("cpu" in available_backends()):
        return "cpu"
    return "reference"


def available_backends() -> set[str]:
    return {backend for (_, backend) in _registry}


def register(op: str, backend: str, fn: Callable, unsupported: Callable[..., str | None] | None = None):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    _registry[(op, backend)] = Implementation(fn, unsupported or (lambda *args, **kwargs: None))


def resolve(op: str, backend: str | None, *args, **kwargs) -> str:
    """The backend that will run ``op`` on these arguments (after any fallback)."""
    name = _resolve(op, backend, *args, **kwargs)
    for seen in _recorders:
        seen.setdefault(op, set()).add(name)
    return name


def _resolve(op: str, backend: str | None, *args, **kwargs) -> str:
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    name = requested_backend(backend)
    automatic = name == "auto"
    if automatic:
        name = auto_backend(device)
    if name == "reference":
        return name
    impl = _registry.get((op, name))
    if impl is None and automatic:
        return "reference"  # an automatic choice that lacks this op is no news to the user
    reason = f"is not available for {op}" if impl is None else impl.unsupported(*args, **kwargs)
    if reason is None:
        return name
    fallback = _fallback(op, name, device, *args, **kwargs)
    key = (op, name, reason)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"mfkernels.{op}: backend {name!r} {reason}; using {fallback!r}", stacklevel=3)
    return fallback


def _fallback(op: str, failed: str, device: torch.device, *args, **kwargs) -> str:
    """Where a call goes that backend ``failed`` cannot run: the device's automatic backend
    when that is another one and can run it, else the reference."""
    name = auto_backend(device)
    impl = _registry.get((op, name))
    if name not in (failed, "reference") and impl is not None and impl.unsupported(*args, **kwargs) is None:
        return name
    return "reference"


def implementation(op: str, backend: str | None, *args, **kwargs) -> Callable:
    return _registry[(op, resolve(op, backend, *args, **kwargs))].fn


def call(op: str, backend: str | None, *args):
    """Run ``op`` on the backend :func:`resolve` picks for these arguments."""
    return implementation(op, backend, *args)(*args)
