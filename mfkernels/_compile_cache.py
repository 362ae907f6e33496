"""Keep torch.compile's on-disk caches from serving code compiled against an older mfkernels.

Inductor and AOTAutograd key a compiled graph by the traced program, not by our custom ops'
fake implementations: after an op's output strides change (an upgrade, or an edit of this
package), a warm cache would serve code that asserts the old strides (``expected size ...
stride ...``). A hash of this package's sources (every ``.py`` below it, with their paths) joins
torch's cache key tag on import.
"""

import hashlib
from pathlib import Path

import torch

_PACKAGE = Path(__file__).resolve().parent


def source_version(package: Path = _PACKAGE) -> str:
    sources = sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).as_posix())
    digest = hashlib.sha256()
    for path in sources:  # names too: a module moved to another file is another program
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def tag_compile_caches() -> None:
    config = getattr(torch.compiler, "config", None)
    if config is None or not hasattr(config, "cache_key_tag"):  # torch without the tag
        return
    tag = f"mfkernels-{source_version()}"
    if tag not in config.cache_key_tag:
        config.cache_key_tag = f"{config.cache_key_tag}+{tag}" if config.cache_key_tag else tag
