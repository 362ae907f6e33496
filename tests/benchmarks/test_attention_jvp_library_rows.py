"""benchmarks/attention_jvp.py's ``ours_bwd_<library>`` rows time the library's backward or
say why not: where the library fails, the triton backend runs its own kernels instead, and
those must not be timed under the library's name."""

import torch
from numerics import DEVICE, needs_triton

from mfkernels.backends import library_attention


@needs_triton
def test_a_failing_library_backward_is_not_timed_as_that_library(tmp_path, monkeypatch):
    from benchmarks import attention_jvp

    def fails(*args, **kwargs):
        raise RuntimeError("cuDNN Frontend error: no valid engine configs\nmore detail")

    monkeypatch.setattr(library_attention, "attention_backward", fails)
    dtype = "bf16" if torch.cuda.is_available() else "fp32"  # what each library takes there
    argv = ["--device", DEVICE, "--quick", "--no-plot", "--backend", "triton", "--seqlens", "16"]
    argv += [
        "--head-dims",
        "16",
        "--heads",
        "1",
        "--tokens",
        "16",
        "--dtypes",
        dtype,
        "--out-dir",
        str(tmp_path),
    ]
    data = attention_jvp.main(argv)
    status = {r["variant"]: r["status"] for r in data["rows"]}
    assert status["ours_bwd"] == "ok"
    tried = [
        library
        for library in library_attention.LIBRARIES
        if not status[f"ours_bwd_{library}"].startswith("skipped")
    ]
    assert tried, status  # flash runs on the CPU, both libraries on a GPU
    for library in tried:
        assert status[f"ours_bwd_{library}"] == (
            "failed: RuntimeError: cuDNN Frontend error: no valid engine configs more detail"
            " (the triton backward would run instead)"
        )
