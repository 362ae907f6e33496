"""What the backend choice tells a user (mfkernels.dispatch): "" means "not given", ``MFK_BACKEND``
is checked, each distinct reason for a fallback is said once, at the user's line,
``forget_warnings()`` forgets them all, a call that fell back is recorded where it ran, and
``available_backends(device)`` names the backends that can run that device's tensors."""

import warnings

import pytest
import torch

from mfkernels import dispatch
from mfkernels.backends.triton.triton_compat import HAS_TRITON, INTERPRET

OP = "test_api_dispatch_op"


def _refuse_low_and_double(x):
    if x.dtype == torch.float64:
        return "does not support float64"
    if x.dtype == torch.float16:
        return "does not support float16"
    return None


@pytest.fixture
def op(monkeypatch):
    """``OP`` on ``reference`` and on ``cuda`` (a stand-in that takes CPU tensors but refuses
    float64 and float16, each for its own reason); the CPU's automatic backend lacks it."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    with (
        dispatch.substitute(OP, "reference", lambda x: "reference"),
        dispatch.substitute(OP, "cuda", lambda x: "cuda", _refuse_low_and_double),
    ):
        yield torch.zeros(2)


def _fallback_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if f"mfkernels.{OP}" in str(w.message)]


def test_an_empty_backend_name_means_not_given(op, monkeypatch):
    assert dispatch.check_backend("") == ""
    assert dispatch.call(OP, "", op) == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")
    assert dispatch.call(OP, "", op) == "cuda", "'' leaves the choice to MFK_BACKEND"


def test_each_reason_for_a_fallback_is_said_once(op):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            assert dispatch.call(OP, "cuda", op.double()) == "reference"
            assert dispatch.call(OP, "cuda", op.half()) == "reference"
    said = _fallback_warnings(caught)
    assert len(said) == 2, said
    assert "float64" in said[0] and "float16" in said[1]


def test_forget_warnings_without_ops_forgets_them_all(op):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dispatch.call(OP, "cuda", op.double())
        dispatch.forget_warnings()
        dispatch.call(OP, "cuda", op.double())
        dispatch.forget_warnings("another_op")
        dispatch.call(OP, "cuda", op.double())
    assert len(_fallback_warnings(caught)) == 2


def test_a_call_that_fell_back_is_recorded_where_it_ran(op):
    with pytest.warns(UserWarning, match="using 'reference'"), dispatch.record_backends() as seen:
        dispatch.call(OP, "cuda", op.double())
    assert seen == {OP: {"reference"}}
    with dispatch.record_backends() as seen:
        dispatch.call(OP, "cuda", op)
    assert seen == {OP: {"cuda"}}


def test_mfk_backend_is_checked_and_trimmed(op, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, " cuda\n")
    assert dispatch.call(OP, None, op) == "cuda"
    monkeypatch.setenv(dispatch.ENV_VAR, "tritn")
    with pytest.raises(ValueError, match="MFK_BACKEND must be one of .* got 'tritn'"):
        dispatch.call(OP, None, op)


@pytest.mark.skipif(not (HAS_TRITON and INTERPRET), reason="needs Triton's interpreter")
def test_triton_runs_cpu_tensors_under_the_interpreter():
    assert {"reference", "triton"} <= dispatch.available_backends("cpu")
    assert "triton" in dispatch.available_backends(torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_without_a_gpu_only_the_reference_runs_cuda_tensors():
    assert dispatch.available_backends("cuda") == {"reference"}
    assert "cpu" not in dispatch.available_backends(torch.device("cuda", 0))


def test_a_fallback_warning_names_the_users_line_not_ours(monkeypatch):
    """Fallbacks are decided frames deep in mfkernels and torch (the op, torch's custom-op
    machinery, the dispatch; torch's SDPA override): the warning points at the line of the
    caller's code that made the call."""
    import torch.nn.functional as F

    import mfkernels
    from mfkernels import sdpa

    dispatch.forget_warnings("gated_residual_jvp", "gated_residual_backward")
    monkeypatch.setattr(sdpa, "_WARNED", set())
    x, gate = torch.randn(2, 4, 8, requires_grad=True), torch.randn(2, 8, requires_grad=True)
    q, q_dot = torch.randn(2, 1, 2, 3, 8).unbind(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # CPU tensors on the cuda backend: the forward and, from autograd's engine, the backward
        x_dot, gate_dot = x.detach(), gate.detach()
        out, _ = mfkernels.gated_residual_jvp(x, x_dot, gate, gate_dot, x, x_dot, backend="cuda")
        out.sum().backward()
        with mfkernels.sdpa_forward_ad("reference"):
            torch.func.jvp(lambda q: F.scaled_dot_product_attention(q, q, q, dropout_p=0.5), (q,), (q_dot,))
    ours = [w for w in caught if "mfkernels." in str(w.message)]
    assert len(ours) == 3, [str(w.message) for w in caught]
    assert [w.filename for w in ours] == [__file__] * 3, [(w.filename, w.lineno) for w in ours]
