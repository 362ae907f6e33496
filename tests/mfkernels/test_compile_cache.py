"""torch.compile's on-disk caches and our ops' output strides."""

import shutil
from pathlib import Path

import torch

import mfkernels
from mfkernels._compile_cache import source_version, tag_compile_caches


def test_compile_caches_are_keyed_by_the_kernel_sources():
    """A compiled graph holds our ops' output strides: torch's cache key carries the sources'
    hash (once, however often the tag is set), so an edit or upgrade never reuses it."""
    tag = f"mfkernels-{source_version()}"
    tag_compile_caches()
    assert torch.compiler.config.cache_key_tag.count(tag) == 1


def test_the_key_covers_every_source_below_the_package(tmp_path):
    """A kernel in a backend subpackage changes the key, and so does moving a module."""
    package = tmp_path / "mfkernels"
    shutil.copytree(
        Path(mfkernels.__file__).parent, package, ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    before = source_version(package)
    kernels = package / "backends" / "triton" / "attention_kernels.py"
    kernels.write_text(kernels.read_text() + "\n")
    edited = source_version(package)
    assert edited != before
    kernels.rename(package / "backends" / "triton" / "moved_kernels.py")
    assert source_version(package) != edited


def test_a_module_renamed_in_place_changes_the_key(tmp_path):
    """Its contents and its place among the sources the same, its name alone differs."""
    package = tmp_path / "mfkernels"
    shutil.copytree(
        Path(mfkernels.__file__).parent, package, ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    before = source_version(package)
    triton_dir = package / "backends" / "triton"
    (triton_dir / "attention_kernels.py").rename(triton_dir / "attention_kernels_.py")
    names = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py"))
    assert (
        names.index("backends/triton/attention_kernels_.py")
        == names.index("backends/triton/attention_configs.py") + 1
    )
    assert source_version(package) != before
