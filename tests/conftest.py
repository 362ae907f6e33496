import os

import torch

# Triton kernels run in the interpreter on a CPU-only machine. This must be set before any
# @triton.jit function is defined, i.e. before mfkernels is imported by a test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # One config per attention kernel, untimed, instead of compiling and timing every candidate
    # for each of the suite's shapes; test_every_tuned_config runs each candidate once.
    os.environ.setdefault("MFK_AUTOTUNE", "0")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# mfkernels' once-per-process warnings (a backend's fallback, docs/design.md section 4; math SDPA
# under a forward-AD level, section 2; MFK_ATTENTION_BACKWARD's library, docs/attention-tuning.md)
# keep what they said in these sets. Shared across tests, a test that asserts the warning would
# pass only where no earlier test gave it, and one that asserts "nothing fell back" (no warning)
# would pass where an earlier test had.
_WARN_ONCE_REGISTRIES = (
    ("mfkernels.dispatch", "_warned"),
    ("mfkernels.sdpa", "_WARNED"),
    ("mfkernels.backends.triton.attention", "_warned_library_fallbacks"),
)


@pytest.fixture(autouse=True)
def _fresh_warn_once_registries(monkeypatch):
    """Every test starts with no once-only warning given yet. Only modules already imported are
    patched: one a test imports (triton's is optional) starts with an empty set anyway."""
    import sys

    for module, name in _WARN_ONCE_REGISTRIES:
        if module in sys.modules:
            monkeypatch.setattr(sys.modules[module], name, set())


@pytest.fixture(autouse=True)
def _keep_threads():
    """The thread count back after each test: ``train.main`` with ``threads`` set (the tests'
    runs take 1 on a shared machine) and the rank-equality tests set it for the whole process."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        # The marker, not item.keywords: those hold parameter ids too, and a CPU test given
        # the id "gpu" was skipped.
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture
def gpu_launch_settings(monkeypatch):
    """The row and pointwise kernels' GPU tiles under the interpreter, which otherwise takes
    one big tile: rows split over column tiles, ragged row tiles and bias rows that straddle
    blocks then run on the CPU too. A no-op on a GPU."""
    from mfkernels.backends.triton import launch

    monkeypatch.setattr(launch, "INTERPRET", False)


# Small models and data shared by tests/meanflow and tests/faults.
from meanflow.models import DiT, DiTConfig  # noqa: E402


def make_tiny(num_classes=5, time_cond="t,h", seed=0, **kw):
    """A 2-block DiT on 1x8x8 inputs with randomised weights: adaLN-Zero would make a fresh
    model output exactly zero, which hides every bug."""
    torch.manual_seed(seed)
    cfg = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2)
    model = DiT(DiTConfig(**{**cfg, **kw}, num_classes=num_classes, time_cond=time_cond))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def tiny():
    return make_tiny


# A diffusers AutoencoderKL config in sd-vae-ft-ema's layout shrunk to two levels of 8 channels:
# 4 latent channels at half the image size. The tests build it with random weights.
TINY_VAE = {
    "block_out_channels": [8, 8],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 4,
    "sample_size": 32,
    "scaling_factor": 0.18215,
}


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory):
    """``(config dict, path of its config.json)`` for ``meanflow.vae.load_vae("random", ...)``."""
    import json

    path = tmp_path_factory.mktemp("tiny-vae") / "config.json"
    path.write_text(json.dumps({"_class_name": "AutoencoderKL", **TINY_VAE}))
    return dict(TINY_VAE), str(path)


def random_vae(config):
    """``meanflow.vae.load_vae("random", config)`` (a dict or a config.json path), its warning
    about random weights expected."""
    from meanflow.vae import load_vae

    with pytest.warns(UserWarning, match="RANDOM"):
        return load_vae("random", config)


def write_idx(path, array, gz=False):
    """Write a uint8 array as an IDX file (MNIST's format), optionally gzipped."""
    import gzip

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with (gzip.open if gz else open)(str(path) + (".gz" if gz else ""), "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
    """A directory with a tiny MNIST look-alike: 96 train and 40 test images (bright squares
    whose position encodes the class), train files gzipped, test files raw."""
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for split, n, gz in (("train", 96, True), ("t10k", 40, False)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c : 8 + 2 * c, 4:20] = 255
        write_idx(root / f"{split}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels, gz)
    return str(root)


@pytest.fixture
def no_extraction(monkeypatch):
    """meanflow.evaluate that fails a test reaching its feature extractor: checks of what it is
    given must refuse before any image is run through a network."""
    from meanflow import evaluate

    def extract(*args, **kwargs):
        raise AssertionError("features extracted before the arguments were checked")

    monkeypatch.setattr(evaluate, "extract", extract)
