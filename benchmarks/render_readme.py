"""Render the README's performance section from the stored benchmark results.

    python benchmarks/render_readme.py                     # rewrite README.md between the markers
    python benchmarks/render_readme.py --output perf.md    # write the section to a file instead
    python benchmarks/render_readme.py --check             # exit 1 if README.md is out of date

Reads every ``jvp_throughput_*.json`` and ``attention_jvp_*.json`` under ``--results`` (default
benchmarks/results/, searched recursively; ``--quick`` smoke runs are ignored), keeps the
newest measurement that worked of each case per benchmark and device (a case: the preset,
batch, dtype and variant of a training step; dtype, head dim and length of attention), so a run
that measured only some presets or variants adds to an older run's numbers instead of hiding
them, and renders markdown tables that always say the device, dtype, date and commit: one
training-step table per device and step mode (cells from several runs say which; the targets of
docs/design.md section 6 judged on the cells shown, by ``step_report``), one attention table
per run, plots beside them. The section between ``<!-- perf:start -->`` and
``<!-- perf:end -->`` in the README is replaced; nothing else is.
"""

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.step_report import (
    cuda_graphs,
    judge_targets,
    step_mode,
    step_title,
    target_value,
    targets_heading,
    why_no_targets,
)

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- perf:start -->", "<!-- perf:end -->"
FAMILY_TITLES = {
    "fm": "FM step",
    "func_jvp": "torch.func.jvp",
    "dual_ref": "dual (reference)",
    "fused_triton": "fused (Triton)",
    "fused_cuda": "fused (CUDA)",
    "fused_cpu": "fused (CPU)",
}


ROWS_NOTE = {
    "all": "Every MeanFlow variant computes du/dt for the whole batch, as public MeanFlow code does.",
    "r_neq_t": "**Every MeanFlow variant computes du/dt only on the rows with r != t** (25%) and runs a "
    "plain forward on the others, as `MeanFlowLoss` does by default: the same loss, less work.",
}


def case_of(benchmark: str, row: dict) -> tuple:
    """What a newer run's row replaces: a training step's (preset, batch, dtype, variant), an
    attention row's (dtype, head dim, sequence length)."""
    if benchmark == "jvp_throughput":
        return row["preset"], row["batch"], row["dtype"], row["variant"]
    return row.get("dtype"), row.get("d"), row.get("N")


def load_results(results_dir: Path) -> dict:
    """``{(benchmark, device name, *step_mode): [payload, ...]}``, newest run first, each
    non-quick run keeping only its rows of cases no newer run measured (runs left with no
    rows are dropped; :func:`merge_step_runs` judges the targets again on what is left)."""
    runs = {}
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or data.get("benchmark") not in ("jvp_throughput", "attention_jvp"):
            continue
        if data.get("settings", {}).get("quick"):
            continue
        data["_path"] = path
        settings = data.get("settings", {})
        key = (data["benchmark"], data["device"]["name"], *step_mode(settings), cuda_graphs(settings))
        runs.setdefault(key, []).append(data)
    kept = {}
    for key, group in runs.items():
        measured, tried = set(), set()
        for data in sorted(group, key=lambda d: d["date"], reverse=True):
            # A failed measurement does not hide an older one that worked; any newer row of a
            # case hides an older failure (else "Failed:" names the case once per run).
            cases = [case_of(key[0], r) for r in data["rows"]]
            ok = [r.get("status") == "ok" for r in data["rows"]]
            rows = [
                r
                for r, case, good in zip(data["rows"], cases, ok)
                if case not in (measured if good else tried)
            ]
            measured |= {case for case, good in zip(cases, ok) if good}
            tried |= set(cases)
            if not rows:
                continue
            if len(rows) < len(data["rows"]):
                data = dict(data, rows=rows)
            kept.setdefault(key, []).append(data)
    return kept


def merge_step_runs(runs: list[dict]) -> dict:
    """One training-step table from the runs of a device and step mode (newest first, each
    cut to the cells no newer run measured): their rows, with the targets judged on them (a
    run's own verdicts were judged on its rows alone, and with the code of its day)."""
    rows = [r for data in runs for r in data["rows"]]
    merged = dict(runs[0], rows=rows, targets=judge_targets(rows, runs[0].get("settings", {})))
    if len(runs) > 1:
        merged["_runs"] = runs
    return merged


def _where(data) -> str:
    v, git = data["versions"], data.get("git", {})
    parts = [f"torch {v.get('torch')}"]
    if v.get("triton"):
        parts.append(f"triton {v['triton']}")
    commit = (git.get("commit") or "unknown")[:10]
    parts.append(f"commit {commit}{' (dirty)' if git.get('dirty') else ''}")
    return ", ".join(parts)


def _where_runs(data) -> str:
    """``_where`` of a table, or of each run a merged table takes cells from."""
    runs = data.get("_runs")
    if not runs:
        return _where(data)
    return "Cells from " + "; ".join(f"{run['date'][:10]} ({_where(run)}): {_run_cells(run)}" for run in runs)


def _run_cells(run) -> str:
    cases = {}
    for r in (r for r in run["rows"] if r["status"] == "ok"):
        cases.setdefault(f"{r['preset']} b{r['batch']} {r['dtype']}", []).append(r["variant"])
    return ", ".join(f"{case} {' '.join(variants)}" for case, variants in cases.items()) or "no timings"


def _plot_link(data, readme_dir: Path, alt: str) -> str:
    links = []
    for run in data.get("_runs") or [data]:
        if run.get("plot"):
            png = run["_path"].parent / run["plot"]
            rel = os.path.relpath(png.resolve(), readme_dir.resolve()).replace(os.sep, "/")
            links.append(f"\n![{alt}]({rel})\n")
    return "".join(links)


def _family(variant: str) -> str:
    return variant.split("+")[0]


def render_throughput(data, readme_dir: Path) -> str:
    rows = [r for r in data["rows"] if r["status"] == "ok"]
    dtypes = ", ".join(sorted({r["dtype"] for r in data["rows"]}))
    device = data["device"]["name"]
    settings = data.get("settings", {})
    rows_mode, w, k = step_mode(settings)
    title, note = step_title(settings), ROWS_NOTE[rows_mode]
    compiled = ", each DiT block's graph replayed as a CUDA graph" if cuda_graphs(settings) else ""
    if (w, k) != (1.0, 0.0):
        note += (
            f" **Guidance is folded into the MeanFlow target (w = {w:g}, k = {k:g}) on every row**: "
            "each MeanFlow step includes its no-grad pass, and the FM step has none."
        )
    out = [
        f"#### DiT training step{title}: {device}, {dtypes}, {data['date'][:10]}",
        "",
        f"{_where_runs(data)}. One full MeanFlow training step (forward, target, backward, AdamW), "
        "ms per step and its ratio to the best FM step (flow matching, one plain forward); each cell "
        f"is the best of eager and `torch.compile` (`c`: compiled{compiled}). Peak memory: the fastest fused "
        f"variant over FM in the same mode. {note}",
        "",
    ]
    groups = {}
    for r in rows:
        groups.setdefault((r["preset"], r["batch"], r["dtype"]), []).append(r)
    families = [f for f in FAMILY_TITLES if any(_family(r["variant"]) == f for r in rows)]
    fused = [f for f in families if f.startswith("fused_")]
    head = ["preset", "batch", "dtype", *(FAMILY_TITLES[f] for f in families)]
    if fused and data["device"]["type"] == "cuda":
        head.append("fused peak mem / FM")
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fallbacks = {}  # family title: ops its best cells ran on another backend, and which
    for (preset, batch, dtype), grp in groups.items():
        fm = min((r for r in grp if _family(r["variant"]) == "fm"), key=lambda r: r["ms"], default=None)
        cells = [preset, str(batch), dtype]
        for f in families:
            cand = [r for r in grp if _family(r["variant"]) == f]
            if not cand:
                cells.append("-")
                continue
            best = min(cand, key=lambda r: r["ms"])
            mark = " c" if best["variant"].endswith("+compile") else ""
            ratio = f" ({best['ms'] / fm['ms']:.2f}x)" if fm and f != "fm" else ""
            if best.get("ops_fallback"):
                ran = best.get("ops_backend", {})
                fallbacks.setdefault(FAMILY_TITLES[f], set()).update(
                    f"{op} ({ran.get(op, 'reference')})" for op in best["ops_fallback"]
                )
                ratio += " *"
            cells.append(f"{best['ms']:.1f} ms{mark}{ratio}")
        if len(head) > len(cells):
            cand = [r for r in grp if _family(r["variant"]).startswith("fused_") and r.get("mem_x_fm")]
            best = min(cand, key=lambda r: r["ms"], default=None)
            cells.append(f"{best['mem_x_fm']:.2f}x ({best['peak_mem_gib']:.1f} GiB)" if best else "-")
        out.append("| " + " | ".join(cells) + " |")
    if fallbacks:
        ops = "; ".join(f"{title}: {', '.join(sorted(names))}" for title, names in fallbacks.items())
        note = "Some ops of these steps ran on another backend (no kernel for them in theirs)"
        out += ["", f"\\* {note}: {ops}."]
    kept = []
    for (preset, batch, dtype), grp in groups.items():
        eager = [r for r in grp if r.get("saved_x_fm")]  # jvp_throughput counts eager steps only
        fm = next((r for r in eager if r["variant"] == "fm"), None)
        if fm:
            others = ", ".join(
                f"{FAMILY_TITLES[r['variant']]} {r['saved_x_fm']:.2f}x" for r in eager if r is not fm
            )
            kept.append(f"- {preset} batch {batch} {dtype}: FM {fm['saved_mib']:.1f} MiB; {others}")
    if kept:
        out += ["", "Activations an eager step keeps for its backward (parameters left out), over FM's:", ""]
        out += kept
    failed = [r for r in data["rows"] if r["status"].startswith("failed")]
    if failed:
        out += [
            "",
            "Failed: "
            + "; ".join(f"{r['preset']} b{r['batch']} {r['variant']}: {r['status']}" for r in failed),
        ]
    if data["targets"]:
        out += ["", targets_heading(data["targets"]), ""]
        for t in data["targets"]:
            mark = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
            out.append(f"- **{mark}** {t['name']}{target_value(t)}, {t['where']}. {t['detail']}")
    else:
        out += ["", f"Targets: {why_no_targets(settings)}."]
    link = _plot_link(data, readme_dir, f"training step times, {device}")
    return "\n".join(out) + "\n" + link


def render_attention(data, readme_dir: Path) -> str:
    ok = [r for r in data["rows"] if r.get("status") == "ok"]
    dtypes = sorted({r["dtype"] for r in ok}, key=["bf16", "fp16", "fp32"].index)
    device, dtype = data["device"]["name"], (dtypes[0] if dtypes else "-")
    peak = data.get("dense_peak") or {}
    ours = data.get("ours_backend", "triton")
    out = [
        f"#### Attention JVP: {device}, {dtype}, {data['date'][:10]}",
        "",
        f"{_where(data)}. TFLOP/s counting 12 N^2 d per (batch*head) for the JVP forward (value and "
        "tangent), 4 N^2 d for the primal forward, 10 N^2 d for the backward.",
    ]
    if peak:
        extra = (
            f"; datasheet {data['datasheet_peak_tflops']:.0f}" if data.get("datasheet_peak_tflops") else ""
        )
        out[-1] += (
            f" % of peak: of a measured dense {peak['shape']} {peak['dtype']} matmul, "
            f"{peak['tflops']:.3g} TFLOP/s{extra}."
        )
    if ours != "triton":
        out[-1] += f" **'ours' is the `{ours}` backend here (plain torch), not the fused kernel.**"
    cols = [
        ("ours_jvp", "ours JVP"),
        ("ours_jvp_tma", "ours JVP, TMA loads"),
        ("func_jvp_math", "torch.func.jvp (math)"),
        ("sdpa_flash_fwd", "SDPA flash fwd"),
        ("sdpa_cudnn_fwd", "SDPA cuDNN fwd"),
        ("flash_attn_fwd", "flash-attn fwd"),
        ("fa3_fwd", "FA3 fwd"),
        ("ours_bwd", "ours bwd"),
        ("ours_bwd_atomic", "ours bwd, atomic dQ"),
        ("ours_bwd_cudnn", "cuDNN bwd of ours"),
        ("ours_bwd_flash", "FA2 bwd of ours"),
        ("sdpa_flash_bwd", "SDPA flash bwd"),
        ("sdpa_cudnn_bwd", "SDPA cuDNN bwd"),
        ("flash_attn_bwd", "flash-attn bwd"),
        ("fa3_bwd", "FA3 bwd"),
    ]

    # Another library's column only where some row of it ran (one this machine lacks adds nothing).
    def shown(variant):
        rows = data["rows"] if variant in ("ours_jvp", "func_jvp_math", "ours_bwd") else ok
        return any(r.get("variant") == variant and r.get("dtype") == dtype for r in rows)

    cut = next((r for r in data["rows"] if r.get("variant") == "all" and "time budget" in r["status"]), None)
    if cut:
        out[-1] += (
            f" **Cut short by its time budget: {cut['dtype']} d = {cut['d']}, N = {cut['N']} and the shapes"
            " after it in the sweep were not run.**"
        )
    present = [(v, t) for v, t in cols if shown(v)]
    out += [
        "",
        "| d | N | batch x heads | " + " | ".join(t for _, t in present) + " |",
        "|---|---|---|" + "---|" * len(present),
    ]
    shapes = {}
    for r in data["rows"]:
        if r.get("dtype") == dtype and r.get("variant") != "all":
            shapes.setdefault((r["d"], r["N"], r.get("batch", 0) * r.get("heads", 0)), {})[r["variant"]] = r
    for (d, n, bh), vs in sorted(shapes.items()):
        cells = []
        for v, _ in present:
            r = vs.get(v)
            if r is None or r["status"] != "ok":
                cells.append("-" if r is None else r["status"].split(":")[0])
            elif v == "ours_jvp" and r.get("pct_measured_peak") is not None:
                cells.append(f"{r['tflops']:.3g} ({r['pct_measured_peak']:.0f}%)")
            else:
                cells.append(f"{r['tflops']:.3g}")
        out.append(f"| {d} | {n} | {bh or '-'} | " + " | ".join(cells) + " |")
    link = _plot_link(data, readme_dir, f"attention JVP TFLOP/s, {device}")
    return "\n".join(out) + "\n" + link


def render(results: dict, readme_dir: Path) -> str:
    parts = [
        "<!-- generated by benchmarks/render_readme.py from benchmarks/results/; edit those, not this -->",
        "",
    ]
    if not results:
        parts.append(
            "No benchmark results stored yet: run `bash benchmarks/gpu_validate.sh` on a GPU machine."
        )
    # GPU results first, then the CPU ones; throughput before attention; newest run first.
    order = sorted(
        results.items(),
        key=lambda kv: (kv[1][0]["device"]["type"] != "cuda", kv[0][0] != "jvp_throughput", kv[0][1:]),
    )
    for (benchmark, *_), runs in order:
        if benchmark == "jvp_throughput":
            parts.append(render_throughput(merge_step_runs(runs), readme_dir))
        else:
            parts += [render_attention(data, readme_dir) for data in runs]
    return "\n".join(parts).rstrip() + "\n"


def replace_section(text: str, section: str) -> str:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"the README needs exactly one {START} ... {END} pair, in that order")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{section}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--output", help="write the section here instead of into the README")
    parser.add_argument("--check", action="store_true", help="exit 1 when the README section is stale")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    base = Path(args.output).parent if args.output else readme.parent
    section = render(load_results(Path(args.results)), base)
    if args.output:
        Path(args.output).write_text(section)
        print(f"wrote {args.output}")
        return 0
    text = readme.read_text()
    try:
        new = replace_section(text, section)
    except ValueError as exc:
        print(f"{readme}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = new != text
        print(f"{readme}: performance section is {'out of date' if stale else 'up to date'}")
        return int(stale)
    if new != text:
        readme.write_text(new)
    print(f"updated {readme}" if new != text else f"{readme} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
