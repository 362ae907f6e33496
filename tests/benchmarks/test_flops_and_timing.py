"""The counts and clocks the benchmarks' ratios rest on: model FLOPs against an independent
count, the datasheet peaks MFU is taken against, and what the trainer step's timer brackets."""

import pytest
import torch

from benchmarks import _common as C
from benchmarks import attention_jvp
from benchmarks import trainer_step as TS
from benchmarks import training_step as T


def test_dit_forward_flops_match_the_layer_count():
    """FlopCounterMode's count (a multiply-add is 2 FLOPs) of a DiT-S/2 forward against the
    DiT paper's per-layer count: per block, N (4 D^2 + 2 D * 4D) for the projections and MLP,
    2 N^2 D for the attention products, 6 D^2 for adaLN; the patch embedding, the final layer
    and the time/label embedders besides (the last few MFLOP: under 0.01%). At DiT-XL/2 the
    same count gives 237.2 GFLOP per image, twice the paper's 118.6 G multiply-adds."""
    model = T.build_model("DiT-S/2", None, "cpu")
    in_ch, size, _ = T.preset_inputs("DiT-S/2", None)
    x, y = torch.randn(3, in_ch, size, size), torch.zeros(3, dtype=torch.long)
    counted = TS.forward_flops(model, x, y) / 3
    c = model.config
    d, n, p = c.hidden_size, (size // c.patch_size) ** 2, c.patch_size
    block = n * (4 * d * d + 8 * d * d) + 2 * n * n * d + 6 * d * d
    macs = c.depth * block + n * in_ch * p * p * d + n * d * p * p * in_ch + 2 * d * d
    assert counted == pytest.approx(2 * macs, rel=1e-3)


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA GH200 480GB", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("CPU AMD EPYC (2 cores)", None),
    ],
)
def test_datasheet_peak_is_the_cards_own(name, tflops):
    """MFU and the attention table's datasheet % were taken against 989 TFLOP/s for any name
    holding "H100": an H100 PCIe (756 dense bf16) would read a quarter low."""
    assert C.datasheet_peak_tflops(name) == tflops
    assert attention_jvp.datasheet_peak(name) == tflops


def test_trainer_step_times_each_step_from_a_sync(monkeypatch):
    """The host time of a step is measured from an idle device: without a sync before it, a
    GPU-bound step's call waits for the steps queued before it and reads as host-bound."""
    log = []

    def run_step(step, batch, noise, lr):
        log.append(("step", step))
        return {"loss": torch.tensor(0.0)}

    monkeypatch.setattr(TS.train, "build_step", lambda *args, **kwargs: run_step)
    monkeypatch.setattr(TS.C, "sync", lambda device: log.append(("sync",)))
    row = TS.run_case("DiT-T/4", 2, "fm", "eager", torch.device("cpu"), "fp32", steps=3)
    assert row["status"] == "ok" and 0 < row["host_ms"] <= row["ms"]
    for step in (5, 6, 7):
        at = log.index(("step", step))
        assert log[at - 1] == ("sync",) and log[at + 1] == ("sync",), log


def test_the_benchmarked_gpu_is_made_the_current_one(monkeypatch):
    """CUDA events and ``do_bench`` run on the current device's stream: timing ``cuda:1``
    while ``cuda:0`` is current would time an idle stream."""
    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    assert C.use_device("cuda:1") == torch.device("cuda", 1)
    assert made_current == [torch.device("cuda", 1)]
    assert C.use_device("cpu") == torch.device("cpu") and len(made_current) == 1
    with pytest.raises(ValueError, match="GPU 2 asked for, this machine has 2"):
        C.use_device("cuda:2")
