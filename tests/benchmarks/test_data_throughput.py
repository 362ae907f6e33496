"""benchmarks/data_throughput.py --quick runs end to end on the CPU and writes sane JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meanflow.data.dali_images import dali_available

ROOT = Path(__file__).resolve().parents[2]


# CI installs DALI (the test extra): there a missing DALI fails instead of skipping.
@pytest.mark.skipif(
    not dali_available() and not os.environ.get("CI"), reason="nvidia-dali-cuda130 not installed"
)
def test_data_throughput_quick(tmp_path):
    script = str(ROOT / "benchmarks" / "data_throughput.py")
    args = "--quick --images 32 --latents 64 --batch 8 --seconds 0 --workers 1".split()
    cmd = [sys.executable, script, *args, "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = tmp_path.glob("data_throughput_*_quick.json")
    data = json.loads(path.read_text())
    rows = {r["row"]: r for r in data["rows"]}
    assert data["device"]["type"] == "cpu" and data["data"]["jpegs"] == 32
    for name in ("dali_cpu", "torchvision", "torch_adm", "latents_dali", "latents_torch"):
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["per_s"] > 0 and rows[name]["samples"] >= 32
    assert rows["dali_gpu"]["status"].startswith("skipped")
    assert 0 < rows["dali_cpu"]["adm_diff"] < 3  # DALI's crop stays close to the exact ADM crop
    assert "x_torch" in proc.stdout and "latents_dali" in proc.stdout
