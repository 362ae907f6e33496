"""What the triton backend takes: CUDA tensors (CPU ones under the interpreter) of fp32, fp16
or bf16, and nothing without Triton; the interpreter only when TRITON_INTERPRET=1 says so."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from numerics import needs_triton

from mfkernels.backends.triton import triton_compat

_INTERPRET_OF = r"""
import importlib, json, os, sys
from mfkernels.backends.triton import triton_compat
seen = {}
for value in sys.argv[1:]:
    if value == "unset":
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = value
    seen[value] = importlib.reload(triton_compat).INTERPRET
print(json.dumps(seen))
"""


def test_the_interpreter_is_on_only_under_triton_interpret_1():
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", _INTERPRET_OF, "unset", "0", "1"]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == '{"unset": false, "0": false, "1": true}'


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_the_float_dtypes_are_taken(dtype):
    assert triton_compat.triton_unsupported(torch.zeros(2, dtype=dtype)) is None


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.int32])
def test_other_dtypes_are_refused_by_name(dtype):
    assert triton_compat.triton_unsupported(torch.zeros(2, dtype=dtype)) == f"does not support {dtype}"


def test_without_triton_nothing_is_taken(monkeypatch):
    monkeypatch.setattr(triton_compat, "HAS_TRITON", False)
    monkeypatch.setattr(triton_compat, "INTERPRET", True)
    assert triton_compat.triton_unsupported(torch.zeros(2)) == "needs the triton package"
