"""What a training-step run's rows say: the step mode of its settings, ratios to the FM step,
the targets' verdicts, and the table and plot ``jvp_throughput.py`` shows them in.

The targets are stated in docs/design.md section 6. ``render_readme.py`` judges them here too,
on the cells it merges from several runs, so the README and a run's own output agree.
"""

import statistics

from benchmarks import _common as C
from benchmarks.training_step import LOSS_DEFAULTS, family, is_compiled

# ------------------------------------------------------------------ the step mode


def step_mode(settings: dict) -> tuple[str, float, float]:
    """``(tangent rows, w, k)`` of a training-step run's settings (the default step for runs
    from before ``--tangent-rows`` and ``--cfg-w/--cfg-k`` existed)."""
    return (
        settings.get("tangent_rows", LOSS_DEFAULTS["tangent_rows"]),
        settings.get("cfg_w", LOSS_DEFAULTS["cfg_w"]),
        settings.get("cfg_k", LOSS_DEFAULTS["cfg_k"]),
    )


def is_guided(settings: dict) -> bool:
    _, w, k = step_mode(settings)
    return (w, k) != (LOSS_DEFAULTS["cfg_w"], LOSS_DEFAULTS["cfg_k"])


def cuda_graphs(settings: dict) -> bool:
    """Whether a training-step run compiled its steps with CUDA graphs (its own table)."""
    return settings.get("compile_mode") == "cudagraphs"


def step_title(settings: dict) -> str:
    """How a run's step differs from the default one, as a title suffix (README and plots)."""
    rows_mode, w, k = step_mode(settings)
    title = ", du/dt on the rows with r != t" if rows_mode == "r_neq_t" else ""
    title += f", guidance w = {w:g}, k = {k:g}" if is_guided(settings) else ""
    return title + (", compiled with CUDA graphs" if cuda_graphs(settings) else "")


# ------------------------------------------------------------------ derived numbers


def _key(row):
    return (row["preset"], row["batch"], row["dtype"], row["device"])


def annotate(rows):
    """Ratios to the FM step of the same preset/batch/dtype: ``x_fm`` against FM in the same
    mode (eager vs eager, compiled vs compiled; eager FM when compiled FM is missing),
    ``x_fm_eager`` against eager FM, ``mem_x_fm`` for peak memory likewise, ``saved_x_fm`` for
    the activations saved for the backward against eager FM's."""
    ok = {(_key(r), r["variant"]): r for r in rows if r["status"] == "ok"}
    for row in rows:
        if row["status"] != "ok":
            continue
        fm_eager = ok.get((_key(row), "fm"))
        fm_same = ok.get((_key(row), "fm+compile" if is_compiled(row["variant"]) else "fm")) or fm_eager
        if fm_same:
            row["x_fm"] = round(row["ms"] / fm_same["ms"], 3)
            if row.get("peak_mem_gib") and fm_same.get("peak_mem_gib"):
                row["mem_x_fm"] = round(row["peak_mem_gib"] / fm_same["peak_mem_gib"], 3)
        if fm_eager:
            row["x_fm_eager"] = round(row["ms"] / fm_eager["ms"], 3)
            if row.get("fwd_ms") and fm_eager.get("fwd_ms"):
                row["fwd_x_fm"] = round(row["fwd_ms"] / fm_eager["fwd_ms"], 3)
            if row.get("saved_mib") and fm_eager.get("saved_mib"):
                row["saved_x_fm"] = round(row["saved_mib"] / fm_eager["saved_mib"], 3)


# ------------------------------------------------------------------ the targets
# Each target's name, as stored in the results, and what it compares (for headings).
STEP_VS_FM = "fused step <= 1.4x FM step"
VS_FUNC_JVP = "fused >= 2x faster than best torch.func.jvp"
PEAK_MEMORY = "fused peak memory <= 1.2x FM"
CPU_DUAL = "CPU: dual reference >= 1.5x faster than eager torch.func.jvp"
TOPICS = {
    STEP_VS_FM: "fused step vs flow matching",
    VS_FUNC_JVP: "fused vs torch.func.jvp",
    PEAK_MEMORY: "peak memory",
    CPU_DUAL: "CPU dual reference vs torch.func.jvp",
}
WHERE_JUDGED = (
    "they are judged on DiT-XL/2 bf16 rows on a GPU, and on fp32 rows on the CPU with both "
    "dual_ref and func_jvp timed"
)


def _best(rows, prefix):
    cands = [r for r in rows if r["status"] == "ok" and family(r["variant"]).startswith(prefix)]
    return min(cands, key=lambda r: r["ms"]) if cands else None


def _untried_func_jvp(rows) -> str | None:
    """Why one of torch.func.jvp's variants (eager, compiled) has no timing and no failure
    either, or None when both were tried: a failure (OOM, a compile error or past its own
    cap) is a result, a case the time budget skipped is not."""
    tried = {r["variant"]: r["status"] for r in rows if family(r["variant"]) == "func_jvp"}
    for variant in ("func_jvp", "func_jvp+compile"):
        status = tried.get(variant)
        if status is None:
            return f"{variant} not in the run"
        if status.startswith("skipped"):
            return f"{variant} {status}"
    return None


def _target(name, where, value=None, threshold=None, passed=None, detail=""):
    out = {"name": name, "where": where, "pass": passed, "detail": detail}
    if value is not None:
        out.update(value=round(value, 3), threshold=threshold)
    return out


def _speedup(slow, fast, times_key, median_key):
    """``slow / fast``: the median of per-round ratios when both were timed round robin
    (paired, so that load from other processes cancels), else the ratio of the medians."""
    a, b = slow.get(times_key), fast.get(times_key)
    if slow.get("interleaved") and fast.get("interleaved") and a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b)), f"median of {len(a)} paired rounds"
    return slow[median_key] / fast[median_key], "ratio of medians"


def evaluate_targets(rows):
    """The targets (docs/design.md section 6), on the rows they apply to: DiT-XL/2 bf16 on a
    GPU (fused step vs FM step and vs the best torch.func.jvp variant, peak memory) and fp32 on
    the CPU (dual reference vs eager torch.func.jvp). ``pass`` is None where a side has no
    timing."""
    targets = []
    groups = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    for (preset, batch, dtype, device), grp in groups.items():
        where = f"{preset} batch {batch} {dtype} on {device}"
        if preset == "DiT-XL/2" and dtype == "bf16" and not device.startswith("CPU"):
            fused, fm, func = _best(grp, "fused_"), _best(grp, "fm"), _best(grp, "func_jvp")
            if fused is None or fm is None:
                targets.append(_target(STEP_VS_FM, where, detail="no fused or no FM timing"))
                continue
            ratio = fused["ms"] / fm["ms"]
            detail = f"fused {fused['variant']} {fused['ms']:.1f} ms, FM {fm['variant']} {fm['ms']:.1f} ms"
            targets.append(_target(STEP_VS_FM, where, ratio, 1.4, ratio <= 1.4, detail))
            if func is None:
                why = "; ".join(
                    f"{r['variant']}: {r['status']}" for r in grp if family(r["variant"]) == "func_jvp"
                )
                why = f"({why})" if why else "(no torch.func.jvp variant in the run)"
                targets.append(_target(VS_FUNC_JVP, where, detail=f"no torch.func.jvp timing {why}"))
            else:
                speedup = func["ms"] / fused["ms"]
                detail = f"best torch.func {func['variant']} {func['ms']:.1f} ms"
                passed = speedup >= 2.0
                unmeasured = _untried_func_jvp(grp)
                if unmeasured and passed:
                    # The target is against the best of eager and compiled: one never tried
                    # (cut by the time budget, or not in the run) could be the faster, so a
                    # pass over the other alone is no verdict.
                    passed = None
                    detail += f"; {unmeasured}, so no verdict"
                targets.append(_target(VS_FUNC_JVP, where, speedup, 2.0, passed, detail))
            same_mode = "fm+compile" if is_compiled(fused["variant"]) else "fm"
            fm_mem = next((r for r in grp if r["status"] == "ok" and r["variant"] == same_mode), fm)
            if fused.get("peak_mem_gib") and fm_mem.get("peak_mem_gib"):
                mem = fused["peak_mem_gib"] / fm_mem["peak_mem_gib"]
                detail = (
                    f"{fused['variant']} {fused['peak_mem_gib']:.2f} GiB, "
                    f"{fm_mem['variant']} {fm_mem['peak_mem_gib']:.2f} GiB"
                )
                targets.append(_target(PEAK_MEMORY, where, mem, 1.2, mem <= 1.2, detail))
        elif device.startswith("CPU") and dtype == "fp32":
            ok = {r["variant"]: r for r in grp if r["status"] == "ok"}
            if "dual_ref" in ok and "func_jvp" in ok:
                dual, func = ok["dual_ref"], ok["func_jvp"]
                speedup, how = _speedup(func, dual, "times_ms", "ms")
                detail = f"full steps: dual_ref {dual['ms']:.1f} ms, func_jvp {func['ms']:.1f} ms ({how})"
                if dual.get("fwd_ms") and func.get("fwd_ms"):
                    pass_speedup, _ = _speedup(func, dual, "fwd_times_ms", "fwd_ms")
                    detail += (
                        f"; the (u, du/dt) pass alone: {dual['fwd_ms']:.1f} vs {func['fwd_ms']:.1f} ms,"
                        f" {pass_speedup:.2f}x"
                    )
                targets.append(_target(CPU_DUAL, where, speedup, 1.5, speedup >= 1.5, detail))
    return targets


def judge_targets(rows, settings: dict) -> list:
    """The targets' verdicts on a run's rows; none on a guided step, which they are not stated
    for."""
    return [] if is_guided(settings) else evaluate_targets(rows)


def targets_heading(targets) -> str:
    """``Targets (<what they compare>):``, naming those in ``targets``."""
    topics = dict.fromkeys(TOPICS.get(t["name"], t["name"]) for t in targets)
    return f"Targets ({', '.join(topics)}):"


def why_no_targets(settings: dict) -> str:
    """Why a run (or a README table) has no target verdict."""
    if is_guided(settings):
        return (
            "not judged on a guided step (they are stated for the step without guidance, "
            "w = 1, k = 0: docs/design.md section 6)"
        )
    return f"none apply to these rows ({WHERE_JUDGED})"


def target_value(target) -> str:
    """``": 1.34 (threshold 1.4)"``, or nothing where a side had no timing."""
    if "value" not in target:
        return ""
    return f": {target['value']:.2f} (threshold {target['threshold']})"


# ------------------------------------------------------------------ output


def print_table(rows):
    table = []
    for r in rows:
        ok = r["status"] == "ok"
        table.append(
            [
                r["preset"],
                r["batch"],
                r["dtype"],
                r["variant"],
                f"{r['ms']:.2f}" if ok else r["status"][:48],
                f"{r['ms_iqr']:.2f}" if ok else "",
                f"{r['img_per_s']:.0f}" if ok else "",
                f"{r['peak_mem_gib']:.2f}" if ok and r.get("peak_mem_gib") is not None else "",
                f"{r['x_fm']:.2f}" if r.get("x_fm") else "",
                f"{r['mem_x_fm']:.2f}" if r.get("mem_x_fm") else "",
                f"{r['first_call_s']:.1f}" if r.get("first_call_s") else "",
                f"{r['fwd_ms']:.2f}" if r.get("fwd_ms") else "",
                f"{r['fwd_x_fm']:.2f}" if r.get("fwd_x_fm") else "",
                f"{r['saved_mib']:.1f} ({r['saved_x_fm']:.2f}x)" if r.get("saved_x_fm") else "",
                len(r["ops_fallback"]) if r.get("ops_fallback") is not None else "",
            ]
        )
    heads = [
        "preset",
        "batch",
        "dtype",
        "variant",
        "ms/step",
        "IQR",
        "img/s",
        "peak GiB",
        "x FM",
        "mem x FM",
        "1st call s",
        "pass ms",
        "pass x FM",
        "saved MiB (x FM)",
        "fallbacks",
    ]
    print(C.format_table(table, heads))
    print("x FM: time over the FM step in the same mode (compiled vs compiled FM, else eager FM).")
    print("pass ms: the network pass alone under no_grad (FM: forward; others: u and du/dt), eager only.")
    print("saved MiB: activations autograd keeps for the backward (parameters left out), eager only.")
    print("fallbacks: ops of a fused variant that ran on another backend (names in the JSON).")


def print_targets(targets, settings: dict):
    if not targets:
        print(f"Targets: {why_no_targets(settings)}")
        return
    print(targets_heading(targets))
    for t in targets:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        print(f"  [{mark}] {t['name']}{target_value(t)}  [{t['where']}] {t['detail']}")


def plot(rows, path, label=""):
    plt = C.pyplot()
    if plt is None:
        return None
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault(_key(r), []).append(r)
    if not groups:
        return None
    colors = {
        "fm": "tab:gray",
        "func_jvp": "tab:red",
        "dual_ref": "tab:blue",
        "fused_triton": "tab:green",
        "fused_cuda": "tab:olive",
        "fused_cpu": "tab:cyan",
    }
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(8, 1.2 + 0.45 * max(len(g) for g in groups.values()) * len(groups)),
        squeeze=False,
    )
    for ax, ((preset, batch, dtype, device), grp) in zip(axes[:, 0], groups.items()):
        ms = [r["ms"] for r in grp]
        for i, r in enumerate(grp):
            compiled = is_compiled(r["variant"])
            ax.barh(
                i,
                r["ms"],
                color=colors.get(family(r["variant"]), "k"),
                hatch="//" if compiled else None,
                edgecolor="white" if compiled else None,
            )
            value = f" {r['ms']:.1f} ms" + (f"  {r['x_fm']:.2f}x FM" if r.get("x_fm") else "")
            ax.text(r["ms"], i, value, va="center", fontsize=7)
        ax.set_yticks(range(len(grp)), [r["variant"] for r in grp])
        ax.invert_yaxis()
        ax.set_xlim(0, max(ms) * 1.45)
        ax.set_title(f"{preset}, batch {batch}, {dtype}, {device}{label}", fontsize=9)
        ax.set_xlabel("ms per training step (lower is better)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
