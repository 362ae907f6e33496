"""The backends: plain modules of functions with the signatures of their counterparts in
``mfkernels/reference.py``, each listed in the module's ``OPS`` table (op name ->
:class:`Implementation`). Nothing registers itself on import; ``mfkernels/dispatch.py``
reads the tables, in one place, when a backend is first asked for.

- ``torch_ops``: the ``reference`` backend, torch's fused kernels (any device).
- ``triton``: the Triton kernels, one module per op family.
- ``csrc``: the C++/CUDA extension ``mfkernels._C``: the ``cpu`` and ``cuda`` backends.
"""

from collections.abc import Callable
from dataclasses import dataclass


def always_supported(*args, **kwargs) -> None:
    return None


@dataclass(frozen=True)
class Implementation:
    fn: Callable
    # Returns None when the call is supported, else a short reason for the fallback warning.
    unsupported: Callable[..., str | None] = always_supported
