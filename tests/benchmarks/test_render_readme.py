"""benchmarks/render_readme.py on small synthetic result files."""

import json

import pytest

from benchmarks import render_readme

README = (
    "# Project\n\nintro\n\n## Performance\n\n<!-- perf:start -->\nold text\n<!-- perf:end -->\n\nfooter\n"
)


def _header(benchmark, device, date, quick=False, dtype_rows=()):
    return {
        "benchmark": benchmark,
        "schema": 1,
        "date": date,
        "device": device,
        "versions": {"torch": "2.11.0", "triton": "3.6.0"},
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "settings": {"quick": quick},
    }


H100 = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}


def _step_row(variant, ms, peak, preset="DiT-XL/2", status="ok"):
    row = {
        "preset": preset,
        "batch": 64,
        "dtype": "bf16",
        "device": H100["name"],
        "variant": variant,
        "status": status,
    }
    if status == "ok":
        row.update(ms=ms, peak_mem_gib=peak, mem_x_fm=round(peak / 20.0, 3))
        if not variant.endswith("+compile"):
            row.update(saved_mib=peak * 100, saved_x_fm=round(peak / 20.0, 3))
    return row


def _write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    step = _header("jvp_throughput", H100, "2026-11-23T10:00:00+00:00")
    step["rows"] = [
        _step_row("fm", 300.0, 20.0),
        _step_row("fm+compile", 280.0, 19.0),
        _step_row("func_jvp", 900.0, 40.0),
        _step_row("func_jvp+compile", 0, 0, status="failed: compile timed out after 120 s"),
        _step_row("fused_triton", 420.0, 22.0),
        _step_row("fused_triton+compile", 380.0, 21.0),
    ]
    step["targets"] = [
        {"name": "fused step <= 1.4x FM step", "where": "DiT-XL/2 batch 64 bf16", "value": 1.357,
         "threshold": 1.4, "pass": True, "detail": "fused_triton+compile 380.0 ms"},
    ]  # fmt: skip
    step["plot"] = "jvp_throughput_nvidia-h100-80gb-hbm3.png"
    _write(res / "h100-run" / "jvp_throughput_nvidia-h100-80gb-hbm3.json", step)
    # An older run of the same device and a quick smoke run: both must be ignored.
    old = dict(step, date="2026-01-01T00:00:00+00:00", rows=[_step_row("fm", 999.0, 99.0)])
    _write(res / "jvp_throughput_nvidia-h100-80gb-hbm3.json", old)
    quick = dict(
        step, settings={"quick": True}, date="2027-01-01T00:00:00+00:00", rows=[_step_row("fm", 1.0, 1.0)]
    )
    _write(res / "jvp_throughput_nvidia-h100-80gb-hbm3_quick.json", quick)

    attn = _header("attention_jvp", H100, "2026-11-23T10:05:00+00:00")
    attn.update(ours_backend="triton", dense_peak={"shape": "8192^3", "dtype": "bfloat16", "tflops": 700.0},
                datasheet_peak_tflops=989.0)  # fmt: skip
    attn["rows"] = [
        {"dtype": "bf16", "d": 72, "N": 1024, "variant": "ours_jvp", "status": "ok", "tflops": 350.0,
         "pct_measured_peak": 50.0},
        {"dtype": "bf16", "d": 72, "N": 1024, "variant": "sdpa_flash_fwd", "status": "ok", "tflops": 400.0},
        {"dtype": "bf16", "d": 72, "N": 1024, "variant": "fa3_fwd", "status": "skipped: not installed"},
        {"dtype": "bf16", "d": 72, "N": 1024, "variant": "ours_bwd_cudnn", "status": "ok", "tflops": 250.0},
        {"dtype": "bf16", "d": 72, "N": 1024, "variant": "ours_bwd_flash", "status": "skipped: no flash"},
        {"dtype": "bf16", "d": 72, "N": 16384, "variant": "func_jvp_math", "status": "skipped: OOM risk"},
        {"dtype": "bf16", "d": 72, "N": 16384, "variant": "ours_jvp", "status": "ok", "tflops": 420.0,
         "pct_measured_peak": 60.0},
        # The same d and N at DiT-XL/2's batch x heads: a row of its own.
        {"dtype": "bf16", "d": 72, "N": 1024, "batch": 64, "heads": 16, "variant": "ours_jvp", "status": "ok",
         "tflops": 300.0, "pct_measured_peak": 43.0},
    ]  # fmt: skip
    _write(res / "attention_jvp_nvidia-h100-80gb-hbm3.json", attn)
    (res / "notes.json").write_text("[1, 2]")  # other JSON is not a result file
    return res


def test_renders_newest_results_with_device_dtype_date(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert render_readme.main(["--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\nintro\n") and text.endswith("<!-- perf:end -->\n\nfooter\n")
    assert "old text" not in text
    section = text.split("<!-- perf:start -->")[1].split("<!-- perf:end -->")[0]
    assert "#### DiT training step: NVIDIA H100 80GB HBM3, bf16, 2026-11-23" in section
    assert "#### Attention JVP: NVIDIA H100 80GB HBM3, bf16, 2026-11-23" in section
    assert "commit 0123456789" in section and "torch 2.11.0" in section
    # Best of eager/compiled per family, ratio to the best FM step (280 ms).
    row = next(line for line in section.splitlines() if line.startswith("| DiT-XL/2"))
    assert "280.0 ms c" in row and "380.0 ms c (1.36x)" in row and "900.0 ms (3.21x)" in row
    assert "1.05x (21.0 GiB)" in row
    kept = "- DiT-XL/2 batch 64 bf16: FM 2000.0 MiB; torch.func.jvp 2.00x, fused (Triton) 1.10x"
    assert kept in section.splitlines()
    assert "999.0" not in section and "| 1.0 ms" not in section  # older and quick runs ignored
    assert "func_jvp+compile: failed: compile timed out" in section
    assert "**PASS** fused step <= 1.4x FM step: 1.36 (threshold 1.4)" in section
    assert "](results/h100-run/jvp_throughput_nvidia-h100-80gb-hbm3.png)" in section
    assert "| d | N | batch x heads | ours JVP | torch.func.jvp (math) | SDPA flash fwd |" in section
    assert "FA3" not in section and "FA2 bwd of ours" not in section  # no row of them ran
    assert "| SDPA flash fwd | cuDNN bwd of ours |" in section
    assert "| 72 | 1024 | - | 350 (50%) | - | 400 | 250 |" in section
    assert "| 72 | 1024 | - | 350 (50%) | - | 400 |" in section
    assert "| 72 | 1024 | 1024 | 300 (43%) | - | - |" in section
    assert "| 72 | 16384 | - | 420 (60%) | skipped | - |" in section
    assert "datasheet 989" in section and "12 N^2 d" in section
    # Idempotent, and --check agrees.
    assert render_readme.main(["--results", str(results), "--readme", str(readme)]) == 0
    assert readme.read_text() == text
    assert render_readme.main(["--results", str(results), "--readme", str(readme), "--check"]) == 0


def test_check_reports_stale_and_missing_markers(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert render_readme.main(["--results", str(results), "--readme", str(readme), "--check"]) == 1
    assert readme.read_text() == README
    readme.write_text("# no markers\n")
    assert render_readme.main(["--results", str(results), "--readme", str(readme)]) == 2
    with pytest.raises(ValueError, match="perf:start"):
        render_readme.replace_section("<!-- perf:end --> <!-- perf:start -->", "x")


def test_no_results_says_how_to_get_them(tmp_path):
    section = render_readme.render({}, tmp_path)
    assert "gpu_validate.sh" in section


def test_cpu_attention_says_reference_backend(tmp_path):
    data = _header("attention_jvp", {"type": "cpu", "name": "CPU AMD EPYC (2 cores)"}, "2026-11-23T00:00:00")
    data.update(ours_backend="reference", rows=[], _path=tmp_path / "a.json")
    text = render_readme.render_attention(data, tmp_path)
    assert (
        "CPU AMD EPYC (2 cores)" in text and "`reference` backend" in text and "not the fused kernel" in text
    )


@pytest.mark.parametrize(
    "settings, suffix, title, note",
    [
        (dict(tangent_rows="r_neq_t"), "_r_neq_t", ", du/dt on the rows with r != t", "only on the rows"),
        (dict(cfg_w=2.0, cfg_k=0.0), "_cfg", ", guidance w = 2, k = 0", "the FM step has none"),
    ],
)
def test_each_step_mode_gets_its_own_table(results, tmp_path, settings, suffix, title, note):
    """A run with ``--tangent-rows r_neq_t`` or ``--cfg-w/--cfg-k`` says so in its title and
    note and does not replace the device's run of the default step."""
    step = _header("jvp_throughput", H100, "2026-11-24T10:00:00+00:00")
    step["settings"].update(settings)
    step["rows"] = [_step_row("fm", 300.0, 20.0), _step_row("fused_triton", 330.0, 21.0)]
    _write(results / f"jvp_throughput{suffix}_nvidia-h100-80gb-hbm3.json", step)
    section = render_readme.render(render_readme.load_results(results), tmp_path)
    assert "#### DiT training step: NVIDIA H100 80GB HBM3, bf16, 2026-11-23" in section
    assert f"#### DiT training step{title}: NVIDIA H100 80GB HBM3" in section
    assert note in section
    assert "380.0 ms c (1.36x)" in section and "330.0 ms (1.10x)" in section
    if suffix == "_cfg":  # no verdict on a guided step, and a line that says why
        guided = section.split(f"#### DiT training step{title}")[1]
        assert "\nTargets: not judged on a guided step (" in guided and "**PASS**" not in guided


def test_an_older_run_keeps_the_cases_no_newer_run_measured(results, tmp_path):
    """A newer run that measured other presets (or head dims) adds to the older run's numbers:
    one training-step table with the cells no newer run measured, saying which run each came
    from, its targets judged again on them; attention keeps a table per run."""
    older = _header("jvp_throughput", H100, "2026-11-20T10:00:00+00:00")
    older["git"]["commit"] = "feedfacecafe"
    older["rows"] = [
        _step_row("fm", 111.0, 5.0, preset="DiT-S/2"),
        _step_row("fm", 777.0, 20.0),  # DiT-XL/2: measured again by the fixture's newer run
    ]
    older["targets"] = [{"name": "stale target", "where": "DiT-XL/2", "pass": False, "detail": ""}]
    _write(results / "older" / "jvp_throughput_nvidia-h100-80gb-hbm3.json", older)
    attn = _header("attention_jvp", H100, "2026-11-20T10:05:00+00:00")
    attn["rows"] = [
        {"dtype": "bf16", "d": 72, "N": 1024, "variant": "ours_jvp", "status": "ok", "tflops": 111.0},
        {"dtype": "bf16", "d": 128, "N": 1024, "variant": "ours_jvp", "status": "ok", "tflops": 222.0},
    ]
    _write(results / "older" / "attention_jvp_nvidia-h100-80gb-hbm3.json", attn)

    section = render_readme.render(render_readme.load_results(results), tmp_path)
    assert section.count("#### DiT training step") == 1
    assert "#### DiT training step: NVIDIA H100 80GB HBM3, bf16, 2026-11-23" in section
    assert "| DiT-S/2 | 64 | bf16 | 111.0 ms |" in section
    newest = "Cells from 2026-11-23 (torch 2.11.0, triton 3.6.0, commit 0123456789): DiT-XL/2 b64 bf16 fm"
    assert newest in section
    assert "2026-11-20 (torch 2.11.0, triton 3.6.0, commit feedfaceca): DiT-S/2 b64 bf16 fm" in section
    assert "777.0" not in section and "stale target" not in section
    assert "**PASS** fused step <= 1.4x FM step: 1.36" in section  # judged again on the merged cells
    assert "| 128 | 1024 | - | 222 |" in section and "111" not in section.split("Attention JVP")[-1]


def test_a_newer_run_of_some_variants_fills_the_same_row(results, tmp_path):
    """Compiled variants measured again later replace only those cells; a newer failure does
    not hide an older measurement that worked."""
    newer = _header("jvp_throughput", H100, "2026-11-25T10:00:00+00:00")
    newer["rows"] = [
        _step_row("fm+compile", 250.0, 19.0),
        _step_row("fused_triton+compile", 300.0, 21.0),
        _step_row("fused_triton", 0, 0, status="failed: CaseTimeout"),
    ]
    _write(results / "newer" / "jvp_throughput_nvidia-h100-80gb-hbm3.json", newer)
    section = render_readme.render(render_readme.load_results(results), tmp_path)
    row = next(line for line in section.splitlines() if line.startswith("| DiT-XL/2"))
    assert "250.0 ms c" in row and "900.0 ms (3.60x)" in row and "300.0 ms c (1.20x)" in row
    assert "**PASS** fused step <= 1.4x FM step: 1.20" in section
    assert "fused_triton: failed: CaseTimeout" in section


def test_reference_fallbacks_are_marked(results, tmp_path):
    """A fused step that ran some ops on another backend says so under the table, and where."""
    step = _header("jvp_throughput", H100, "2026-11-25T10:00:00+00:00")
    step["rows"] = [_step_row("fm", 300.0, 20.0), _step_row("fused_cuda", 600.0, 22.0)]
    step["rows"][1]["ops_fallback"] = ["attention_jvp", "attention_backward"]
    step["rows"][1]["ops_backend"] = {"attention_jvp": "triton", "gelu_tanh_jvp": "cuda"}
    _write(results / "newer" / "jvp_throughput_nvidia-h100-80gb-hbm3.json", step)
    section = render_readme.render(render_readme.load_results(results), tmp_path)
    assert "600.0 ms (2.14x) *" in section and "380.0 ms c (1.36x) |" in section
    note = "Some ops of these steps ran on another backend (no kernel for them in theirs)"
    assert f"{note}: fused (CUDA): attention_backward (reference), attention_jvp (triton)." in section


def test_a_cuda_graphs_run_gets_its_own_table(results, tmp_path):
    step = _header("jvp_throughput", H100, "2026-11-24T10:00:00+00:00")
    step["settings"]["compile_mode"] = "cudagraphs"
    step["rows"] = [_step_row("fm+compile", 250.0, 20.0), _step_row("fused_triton+compile", 330.0, 21.0)]
    _write(results / "jvp_throughput_cudagraphs_nvidia-h100-80gb-hbm3.json", step)
    section = render_readme.render(render_readme.load_results(results), tmp_path)
    assert "380.0 ms c (1.36x)" in section  # the regional run's table stays
    assert "#### DiT training step, compiled with CUDA graphs: NVIDIA H100 80GB HBM3" in section
    assert "replayed as a CUDA graph" in section and "330.0 ms c (1.32x)" in section


def test_the_readme_section_is_rendered_from_the_committed_results():
    """README.md's performance section is what the script renders from benchmarks/results/."""
    assert render_readme.main(["--check"]) == 0


def test_an_attention_sweep_cut_by_its_time_budget_says_so(results, tmp_path):
    """The H200 attention runs of 2026-12-04 stopped at their --time-budget (d = 128 at one N
    of seven): their tables looked like whole sweeps."""
    path = results / "attention_jvp_nvidia-h100-80gb-hbm3.json"
    data = json.loads(path.read_text())
    section = render_readme.render(render_readme.load_results(results), tmp_path)
    assert "Cut short" not in section
    data["rows"].append(
        {"dtype": "bf16", "d": 128, "N": 512, "variant": "all", "status": "skipped: time budget"}
    )
    _write(path, data)
    section = render_readme.render(render_readme.load_results(results), tmp_path)
    assert "**Cut short by its time budget: bf16 d = 128, N = 512 and the shapes after it" in section


def _section(results, tmp_path, *runs):
    for name, payload in runs:
        _write(results / "more" / name, payload)
    return render_readme.render(render_readme.load_results(results), tmp_path)


def _step_run(date, rows, device=H100, **fields):
    step = _header("jvp_throughput", device, date)
    step.update(rows=rows, **fields)
    return step


def test_a_newer_failure_or_batch_or_device_keeps_the_older_cells(results, tmp_path):
    """A newer run's failed fm+compile, its other batch and another device's run each leave
    the H100 batch-64 cells as they were."""
    failed = _step_run("2026-11-25T10:00:00+00:00", [_step_row("fm+compile", 0, 0, status="failed: OOM")])
    batch_32 = _step_run("2026-11-26T10:00:00+00:00", [dict(_step_row("fm+compile", 150.0, 10.0), batch=32)])
    h200 = dict(H100, name="NVIDIA H200")
    h200_row = dict(_step_row("fm", 200.0, 20.0), device="NVIDIA H200")
    other = _step_run("2026-11-27T10:00:00+00:00", [h200_row], device=h200)
    section = _section(
        results,
        tmp_path,
        ("a.json", failed),
        ("b.json", batch_32),
        ("jvp_throughput_nvidia-h200.json", other),
    )
    h100, h200_table = section.split("#### DiT training step: NVIDIA H200")
    assert "| DiT-XL/2 | 64 | bf16 | 280.0 ms c | 900.0 ms (3.21x) |" in h100
    assert "| DiT-XL/2 | 32 | bf16 | 150.0 ms c |" in h100 and "200.0" not in h100
    assert "| DiT-XL/2 | 64 | bf16 | 200.0 ms |" in h200_table and "280.0" not in h200_table


def test_a_case_failed_in_two_runs_is_named_once_with_the_newer_failure(results, tmp_path):
    oom = _step_row("func_jvp+compile", 0, 0, status="failed: OOM")
    again = _step_run("2026-11-25T10:00:00+00:00", [oom])
    section = _section(results, tmp_path, ("again.json", again))
    failed = next(line for line in section.splitlines() if line.startswith("Failed: "))
    assert failed == "Failed: DiT-XL/2 b64 func_jvp+compile: failed: OOM"


def test_a_dirty_tree_and_skipped_cases_are_told_apart(results, tmp_path):
    rows = [_step_row("fm", 100.0, 20.0), _step_row("fused_cuda", 0, 0, status="skipped: no kernel here")]
    rows.append(_step_row("func_jvp", 0, 0, status="failed: OOM"))
    dirty = _step_run("2026-11-25T10:00:00+00:00", rows, git={"commit": "abcdef0123456789", "dirty": True})
    section = _section(results, tmp_path, ("dirty.json", dirty))
    assert "commit abcdef0123 (dirty)" in section and "commit 0123456789 (dirty)" not in section
    failed = next(line for line in section.splitlines() if line.startswith("Failed: "))
    assert "DiT-XL/2 b64 func_jvp: failed: OOM" in failed and "fused_cuda" not in failed


def test_a_cpu_table_has_no_peak_memory_column(tmp_path):
    cpu = {"type": "cpu", "name": "CPU AMD EPYC (2 cores)"}
    rows = [
        dict(_step_row("fm", 100.0, 1.0), dtype="fp32"),
        dict(_step_row("fused_cpu", 90.0, 1.0), dtype="fp32"),
    ]
    data = render_readme.merge_step_runs([_step_run("2026-11-25T10:00:00+00:00", rows, device=cpu)])
    text = render_readme.render_throughput(data, tmp_path)
    assert "| preset | batch | dtype | FM step | fused (CPU) |\n|---|---|---|---|---|\n" in text
    assert "| DiT-XL/2 | 64 | fp32 | 100.0 ms | 90.0 ms (0.90x) |" in text


def test_attention_rows_are_sorted_and_small_tflops_keep_their_digits(results, tmp_path):
    section = render_readme.render(render_readme.load_results(results), tmp_path)
    rows = [line for line in section.splitlines() if line.startswith("| 72 |")]
    assert [line.split(" | ")[:3] for line in rows] == [
        ["| 72", "1024", "-"],
        ["| 72", "1024", "1024"],
        ["| 72", "16384", "-"],
    ]
    cpu = {"type": "cpu", "name": "CPU AMD EPYC (2 cores)"}
    data = _header("attention_jvp", cpu, "2026-11-23T00:00:00")
    data.update(ours_backend="reference", _path=tmp_path / "a.json")
    row = {"dtype": "fp32", "d": 64, "N": 256, "variant": "ours_jvp", "status": "ok", "tflops": 0.0123}
    data["rows"] = [row]
    assert "| 64 | 256 | - | 0.0123 |" in render_readme.render_attention(data, tmp_path)


def test_gpu_tables_come_first_and_a_devices_step_table_before_its_attention(results, tmp_path):
    cpu = {"type": "cpu", "name": "CPU AMD EPYC (2 cores)"}
    rows = [dict(_step_row("fm", 100.0, 1.0), dtype="fp32", device=cpu["name"])]
    section = _section(
        results, tmp_path, ("jvp_throughput_cpu.json", _step_run("2026-11-25", rows, device=cpu))
    )
    titles = [line for line in section.splitlines() if line.startswith("#### ")]
    assert titles == [
        "#### DiT training step: NVIDIA H100 80GB HBM3, bf16, 2026-11-23",
        "#### Attention JVP: NVIDIA H100 80GB HBM3, bf16, 2026-11-23",
        "#### DiT training step: CPU AMD EPYC (2 cores), fp32, 2026-11-25",
    ]
