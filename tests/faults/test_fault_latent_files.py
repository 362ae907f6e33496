"""A latent file removed or damaged while a run reads the folder (a cleanup job, the folder
prepared again in place): both loaders deliver every batch before it, then stop with an error
naming the file, not a DALI pipeline dump. DALI reads ahead, so its run of the batch before the
file fails too; that batch is still delivered, as the torch loader delivers it."""

import os
import shutil
import warnings

import pytest
import torch

from meanflow.data.dali_images import dali_available

pytest.importorskip("diffusers")

needs_dali = pytest.mark.skipif(
    not dali_available() and not os.environ.get("CI"), reason="nvidia-dali-cuda130 is not installed"
)
READERS = ["torch", pytest.param("dali", marks=needs_dali)]
BATCH = 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_vae):
    """A latent folder of 8 images (4 batches of 2), made once; each test copies it."""
    from meanflow.data.synthetic import make_image_tree
    from meanflow.prepare_latents import prepare_latents

    root = tmp_path_factory.mktemp("latents")
    make_image_tree(str(root / "src"), classes=2, per_class=4, sides=(16, 40), extras=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random VAE weights, said on purpose
        prepare_latents(str(root / "src"), str(root / "lat"), "random", tiny_vae[1], image_size=16,
                        batch_size=4, shard_size=4, num_workers=0, scan_workers=0, progress=False,
                        device="cpu", reader="torch", preview=0)  # fmt: skip
    return str(root / "lat")


def loader(kind, folder):
    from meanflow.data.latents import DALILatentLoader, TorchLatentLoader

    if kind == "dali":
        return DALILatentLoader(folder, BATCH, num_threads=1)
    return TorchLatentLoader(folder, BATCH, num_workers=0)


def read_epoch(kind, folder, change=None):
    """The batches of epoch 0 until an error: ``(batches, error)``; ``change(path)`` is done to
    the file of batch 2 after the loader has opened the folder."""
    reader = loader(kind, folder)
    order = reader.plan.rank_order(0)[0]
    if change is not None:
        change(reader.index.files[order[2 * BATCH]])
    batches, it = [], iter(reader)
    try:
        for _ in range(len(reader)):
            batches.append(next(it))
    except (FileNotFoundError, ValueError) as e:
        return batches, e
    return batches, None


def damage(path):
    with open(path, "r+b") as f:
        f.truncate(20)


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize(
    "change, error, said",
    [
        (os.remove, FileNotFoundError, "removed since the folder was opened"),
        (damage, ValueError, "cannot be read"),
    ],
    ids=["removed", "damaged"],
)
def test_a_latent_file_changed_mid_run_stops_it_naming_it(prepared, tmp_path, kind, change, error, said):
    folder = str(tmp_path / "lat")
    shutil.copytree(prepared, folder)
    whole, _ = read_epoch(kind, folder)
    changed = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the batches before it come without a word
        batches, e = read_epoch(kind, folder, lambda path: changed.append(change(path) or path))
    assert isinstance(e, error) and changed[0] in str(e) and said in str(e), e
    assert len(whole) == 4 and len(batches) == 2
    for (x, y), (x_whole, y_whole) in zip(batches, whole):
        assert torch.equal(y, y_whole) and torch.equal(x, x_whole)


@needs_dali
def test_a_batch_only_dali_fails_on_is_read_with_np_load(prepared, monkeypatch):
    """A batch DALI cannot read though its files are whole is read with np.load, said once,
    and is the batch DALI would have given."""
    from meanflow.data.latents import DALILatentLoader

    whole, _ = read_epoch("dali", prepared)
    moments, calls = DALILatentLoader._moments, []

    def fails_on_batch_1(self, outputs):
        calls.append(1)
        if len(calls) in (2, 3):  # batch 1, then batch 1 alone
            raise RuntimeError("Critical error in pipeline:\nencountered:\nsome DALI failure\n")
        return moments(self, outputs)

    monkeypatch.setattr(DALILatentLoader, "_moments", fails_on_batch_1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches, e = read_epoch("dali", prepared)
    said = "DALI failed on a batch (some DALI failure); read with np.load"
    assert [str(w.message) for w in caught] == [said]
    assert e is None and len(batches) == 4
    for (x, y), (x_whole, y_whole) in zip(batches, whole):
        assert torch.equal(y, y_whole) and torch.equal(x, x_whole)
