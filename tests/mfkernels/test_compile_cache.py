"""torch.compile's on-disk caches and our ops' output strides."""

import torch

from mfkernels._compile_cache import source_version, tag_compile_caches


def test_compile_caches_are_keyed_by_the_kernel_sources():
    """A compiled graph holds our ops' output strides: torch's cache key carries the sources'
    hash (once, however often the tag is set), so an edit or upgrade never reuses it."""
    tag = f"mfkernels-{source_version()}"
    tag_compile_caches()
    assert torch.compiler.config.cache_key_tag.count(tag) == 1
