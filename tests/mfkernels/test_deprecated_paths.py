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
# Where each old module's kernels live now (its ops are the package's, mfkernels.csrc_ops's
# names all the csrc backend's).
NEW_HOME = {
    "mfkernels.attention": "mfkernels.backends.triton.attention",
    "mfkernels.activations": "mfkernels.backends.triton.pointwise",
    "mfkernels.residual": "mfkernels.backends.triton.gated_residual",
    "mfkernels.rms_norm": "mfkernels.backends.triton.rms_norm",
    "mfkernels.csrc_ops": "mfkernels.backends.csrc",
}
RENAMED = {"triton_attention_unsupported": "jvp_unsupported"}


def new_object(path, name):
    kernels = importlib.import_module(NEW_HOME[path])
    is_kernel = name.endswith("_triton") or name in RENAMED or name == "head_dim_parts"
    if path == "mfkernels.csrc_ops" or is_kernel:
        return getattr(kernels, RENAMED.get(name, name))
    return getattr(mfkernels, name)


@pytest.mark.parametrize("path", sorted(MOVED))
def test_old_module_paths_warn_and_still_export(path, monkeypatch):
    monkeypatch.delitem(sys.modules, path, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{path} is deprecated"):
        module = importlib.import_module(path)
    for name in MOVED[path]:
        assert hasattr(module, name), name
    for name in module.__all__:
        # The very objects of the new paths: a re-export of the oracle or of a look-alike
        # (the backward's support check for the JVP's) would pass a test of names alone.
        assert getattr(module, name) is new_object(path, name), name


def test_the_package_attribute_csrc_ops_is_the_csrc_backend(monkeypatch):
    from mfkernels.backends import csrc

    monkeypatch.delattr(mfkernels, "csrc_ops", raising=False)
    with pytest.warns(DeprecationWarning, match="mfkernels.backends.csrc"):
        assert mfkernels.csrc_ops is csrc
