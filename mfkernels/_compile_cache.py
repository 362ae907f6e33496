"""Keep torch.compile's on-disk caches from serving code compiled against an older mfkernels.

Inductor and AOTAutograd key a compiled graph by the traced program, not by our custom ops'
fake implementations: after an op's output strides change (an upgrade, or an edit of this
package), a warm cache would serve code that asserts the old strides (``expected size ...
stride ...``). A hash of this package's sources joins torch's cache key tag on import.
"""

import hashlib
from pathlib import Path

import torch


def source_version() -> str:
    sources = sorted(Path(__file__).resolve().parent.glob("*.py"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]


def tag_compile_caches() -> None:
    config = getattr(torch.compiler, "config", None)
    if config is None or not hasattr(config, "cache_key_tag"):  # torch without the tag
        return
    tag = f"mfkernels-{source_version()}"
    if tag not in config.cache_key_tag:
        config.cache_key_tag = f"{config.cache_key_tag}+{tag}" if config.cache_key_tag else tag
