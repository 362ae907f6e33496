"""``python -m meanflow.demo``: the dual pass and torch.func.jvp agree, and both are timed."""

import re

import pytest

from meanflow import DiT, demo

TINY = "--preset DiT-T/8 --batch 2 --input-size 16 --repeats 1 --device cpu".split()


@pytest.mark.parametrize("classes", [["--num-classes", "10"], ["--num-classes", "0"]])
def test_demo_reports_agreement_and_timings(classes, capsys):
    demo.main([*TINY, *classes])
    out = capsys.readouterr().out
    err_u, err_d = map(float, re.search(r"u (\S+), du/dt (\S+)", out).groups())
    assert err_u < 1e-5 and err_d < 1e-5, out
    dual = float(re.search(r"model.jvp \(dual\) +([\d.]+) ms", out).group(1))
    func, faster = map(
        float, re.search(r"torch.func.jvp +([\d.]+) ms .* dual is ([\d.]+)x faster", out).groups()
    )
    assert faster == pytest.approx(func / dual, abs=0.01, rel=0.01), out
    model = DiT.from_config("DiT-T/8", num_classes=int(classes[1]), in_channels=1, input_size=16)
    params = sum(p.numel() for p in model.parameters())
    assert f"DiT-T/8 ({params / 1e6:.1f}M params), batch 2" in out


def test_a_tangent_that_disagrees_is_reported(monkeypatch, capsys):
    """The demo's du/dt difference is du/dt's own: a dual pass whose tangent is off by 1% reads
    as off, its u still agreeing."""
    jvp = DiT.jvp

    def off_by_a_percent(self, *args, **kwargs):
        u, dudt = jvp(self, *args, **kwargs)
        return u, dudt * 1.01

    monkeypatch.setattr(DiT, "jvp", off_by_a_percent)
    demo.main(TINY)
    out = capsys.readouterr().out
    err_u, err_d = map(float, re.search(r"u (\S+), du/dt (\S+)", out).groups())
    assert err_u < 1e-5 and 5e-3 < err_d < 2e-2, out


def test_an_unknown_preset_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        demo.main([*TINY, "--preset", "DiT-Q/2"])
    err = capsys.readouterr().err
    assert (
        stop.value.code == 2
        and err.startswith("error: unknown DiT preset 'DiT-Q/2'")
        and err.count("\n") == 1
    )


@pytest.mark.parametrize(
    "flag, least",
    [("--repeats", 1), ("--batch", 1), ("--num-classes", 0), ("--channels", 1), ("--input-size", 1)],
)
def test_a_count_out_of_range_is_a_usage_error(flag, least, capsys):
    with pytest.raises(SystemExit) as stop:
        demo.main([*TINY, flag, str(least - 1)])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"error: argument {flag}: must be an integer >= {least}, got {least - 1}" in err
