"""Backend choice and fallback (mfkernels.dispatch), on a made-up op."""

import pytest
import torch

from mfkernels import dispatch

OP = "test_dispatch_op"


@pytest.fixture
def op(monkeypatch):
    """``OP`` with a reference and a ``cpu`` implementation; ``cpu`` refuses float64, and the
    CPU's automatic backend is ``cpu`` whether or not the extension is built."""
    monkeypatch.setattr(dispatch, "auto_backend", lambda device: "cpu")
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.forget_warnings(OP)
    no_float64 = lambda x: "does not support float64" if x.dtype == torch.float64 else None  # noqa: E731
    with (
        dispatch.substitute(OP, "reference", lambda x: "reference"),
        dispatch.substitute(OP, "cpu", lambda x: "cpu", no_float64),
    ):
        yield torch.zeros(2)
    assert dispatch.lookup(OP, "reference") is None, "the stand-ins leave with the block"


def test_a_backend_without_the_op_falls_back_to_the_automatic_one(op):
    with pytest.warns(UserWarning, match=f"{OP}: backend 'triton' is not available for {OP}; using 'cpu'"):
        assert dispatch.call(OP, "triton", op) == "cpu"


def test_a_backend_that_is_not_built_says_why(op, monkeypatch):
    from mfkernels.backends import csrc

    monkeypatch.setitem(dispatch._tables, "cuda", {})
    monkeypatch.setitem(csrc.EMPTY_BECAUSE, "CUDA_OPS", "mfkernels._C is not built (pip install -e .)")
    with pytest.warns(UserWarning, match=r"'cuda' is not available for .* \(mfkernels._C is not built"):
        assert dispatch.call(OP, "cuda", op) == "cpu"


def test_then_to_the_reference_when_the_automatic_one_refuses_too(op):
    with pytest.warns(UserWarning, match="backend 'triton' is not available .*; using 'reference'"):
        assert dispatch.call(OP, "triton", op.double()) == "reference"
    with pytest.warns(UserWarning, match="backend 'cpu' does not support float64; using 'reference'"):
        assert dispatch.call(OP, "cpu", op.double()) == "reference"


def test_the_warning_comes_once_per_op_backend_and_reason(op, recwarn):
    for _ in range(3):
        dispatch.call(OP, "triton", op)
    assert len(recwarn) == 1


def test_argument_then_environment_then_auto(op, monkeypatch):
    assert dispatch.call(OP, None, op) == "cpu"
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert dispatch.call(OP, None, op) == "reference"
    assert dispatch.call(OP, "cpu", op) == "cpu"
    with pytest.raises(ValueError, match="backend must be one of"):
        dispatch.call(OP, "tpu", op)


def test_record_backends_names_where_each_call_ran(op):
    with pytest.warns(UserWarning), dispatch.record_backends() as seen:
        dispatch.call(OP, "cpu", op)
        dispatch.call(OP, "cpu", op.double())  # falls back
        with dispatch.record_backends() as inner:
            dispatch.call(OP, "reference", op)
    assert seen == {OP: {"cpu", "reference"}}
    assert inner == {OP: {"reference"}}
    dispatch.call(OP, "cpu", op)
    assert seen == {OP: {"cpu", "reference"}}, "recording stops at the end of the block"
