"""The module paths that moved keep working, with a DeprecationWarning naming the new place."""

import importlib
import sys

import pytest

import mfkernels

MOVED = {
    "mfkernels.attention": ("attention_jvp", "attention_jvp_triton"),
    "mfkernels.activations": ("gelu_tanh_jvp", "silu_jvp", "gelu_tanh_jvp_triton"),
    "mfkernels.residual": ("gated_residual_jvp", "gated_residual_jvp_triton"),
    "mfkernels.rms_norm": ("rms_norm_jvp", "rms_norm_jvp_triton"),
    "mfkernels.csrc_ops": ("available", "layernorm_modulate_jvp", "import_error"),
}


@pytest.mark.parametrize("path", sorted(MOVED))
def test_old_module_paths_warn_and_still_export(path, monkeypatch):
    monkeypatch.delitem(sys.modules, path, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{path} is deprecated"):
        module = importlib.import_module(path)
    for name in MOVED[path]:
        assert hasattr(module, name), name
    if hasattr(module, "attention_jvp"):
        assert module.attention_jvp is mfkernels.attention_jvp


def test_the_package_attribute_csrc_ops_is_the_csrc_backend(monkeypatch):
    from mfkernels.backends import csrc

    monkeypatch.delattr(mfkernels, "csrc_ops", raising=False)
    with pytest.warns(DeprecationWarning, match="mfkernels.backends.csrc"):
        assert mfkernels.csrc_ops is csrc
