"""``python -m meanflow.demo``: the dual pass and torch.func.jvp agree, and both are timed."""

import re

from meanflow import demo


def test_demo_reports_agreement_and_timings(capsys):
    demo.main("--preset DiT-T/8 --batch 2 --input-size 16 --repeats 1 --device cpu".split())
    out = capsys.readouterr().out
    err_u, err_d = map(float, re.search(r"u (\S+), du/dt (\S+)", out).groups())
    assert err_u < 1e-5 and err_d < 1e-5, out
    assert re.search(r"dual is [\d.]+x faster", out), out
