"""A VAE weights file that holds no state dict (a bare tensor, a list) is a ValueError naming
the file, not an AttributeError from inside the key renaming; and a pickle in it never runs."""

import os
import pickle

import pytest
import torch

from meanflow import vae as mvae


@pytest.mark.parametrize("content", [torch.zeros(3), [torch.zeros(3)], {0: torch.zeros(3)}])
def test_weights_that_are_no_state_dict_are_named(tmp_path, tiny_vae, content):
    pytest.importorskip("diffusers")
    torch.save(content, tmp_path / "vae.pt")
    with pytest.raises(ValueError, match=r"VAE weights .*vae.pt.* hold a \w+, not a state dict"):
        mvae.load_vae(str(tmp_path / "vae.pt"), tiny_vae[1])


def test_a_pickle_in_vae_weights_never_runs(tmp_path, tiny_vae):
    pytest.importorskip("diffusers")

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    for name in ("vae.bin", "folder/diffusion_pytorch_model.bin"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"encoder.conv_in.weight": Payload()}, f, protocol=2)
    (tmp_path / "folder" / "config.json").write_text(open(tiny_vae[1]).read())
    for weights, config in [("vae.bin", tiny_vae[1]), ("folder", None)]:
        with pytest.raises(ValueError, match="cannot read VAE weights"):
            mvae.load_vae(str(tmp_path / weights), config)
    assert not (tmp_path / "ran").exists()
