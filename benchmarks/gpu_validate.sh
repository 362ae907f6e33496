#!/usr/bin/env bash
# One command for a fresh GPU machine: build the optional csrc extension, run the whole test
# suite on the GPU, run the benchmarks, and collect logs, JSON and plots in one folder.
#
#   bash benchmarks/gpu_validate.sh            # -> $OUT/gpu_validate.tgz if set, else benchmarks/results/<device>-<date>/
#   bash benchmarks/gpu_validate.sh --quick    # smoke run of this script itself (any machine, ~2 min)
#
# Needs python with torch, triton, pytest (matplotlib for the plots); no internet, and the
# package need not be installed (everything runs from the repository root). Libraries the GPU
# machine may lack travel as wheels in .whl/ (git-ignored; carry it) and are installed from
# there without dependencies or an index:
#   pip download --no-deps -d .whl diffusers    (the H200 image has timm and diffusers' other needs)
# The whole run stays within 9 minutes (MFK_VALIDATE_SECONDS, default 520, for the timed
# steps): every step has a cap and leaves a reserve for the steps after it; the benchmarks
# get their share as --time-budget and write their JSON after every case, so a step cut
# short still leaves its results. A failing step is recorded and the next one runs. Order:
# environment, build, GPU tests, every tuned attention tile, the trainer's step eager and
# graphed, JVP through other libraries' models, training-step benchmark, its phases, attention
# benchmark, attention's features (causal, grouped heads, masks), csrc op benchmark, the
# ragged-tile diagnosis, training steps with CUDA graphs, the training step with the default
# loss, the rest of the tests if time is left, summary.
set -uo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
PY=${PYTHON:-$(command -v python3 || echo python)}  # the GPU image names its torch python "python3"
TOTAL=${MFK_VALIDATE_SECONDS:-520}  # + ~20 s of set-up, render and summary: <= 9 minutes
START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
unset TRITON_INTERPRET  # tests/conftest.py sets it only where there is no GPU

DEVICE=$($PY -c "import sys; sys.path.insert(0, '.'); import torch; from benchmarks._common import slug, device_name
print(slug(device_name(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))))" 2>/dev/null) || DEVICE=unknown
# Under the device tool, $OUT brings back only a few files: the results go to $OUT/gpu_validate/
# and are packed into $OUT/gpu_validate.tgz at the end (the folder stays if the run is cut short).
DIR=${OUT:+$OUT/gpu_validate}
DIR=${DIR:-benchmarks/results/$DEVICE-$(date -u +%Y%m%d-%H%M)}
mkdir -p "$DIR"
SUMMARY=$DIR/summary.tsv
printf 'step\tstatus\tseconds\n' >"$SUMMARY"
echo "device $DEVICE; results in $DIR; total budget ${TOTAL}s"

left() { echo $((TOTAL - ($(date +%s) - START))); }
# budget CAP RESERVE: seconds for the next step, min(CAP, what is left after RESERVE for the later steps)
budget() {
    local b=$(($(left) - $2))
    ((b > $1)) && b=$1
    echo $b
}
# step NAME SECONDS cmd...: run cmd under a timeout, log to $DIR/NAME.log, record the outcome
step() {
    local name=$1 secs=$2
    shift 2
    if ((secs < 10)); then
        printf '%s\tskipped: no time left\t0\n' "$name" >>"$SUMMARY"
        echo "== $name: skipped (no time left)"
        return
    fi
    echo "== $name (at most ${secs}s) -> $DIR/$name.log"
    local t0=$(date +%s)
    timeout --kill-after=10 "$secs" "$@" >"$DIR/$name.log" 2>&1
    local rc=$? status=ok
    if ((rc == 124 || rc == 137)); then
        status="TIMEOUT after ${secs}s"
    elif [[ $rc == 5 && $name == tests* ]]; then
        status="ok (no tests selected)"
    elif ((rc != 0)); then
        status="exit $rc"
    fi
    printf '%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" >>"$SUMMARY"
    tail -n 4 "$DIR/$name.log" | sed 's/^/    /'
}

# 0. wheels carried in .whl/ (diffusers: the adapters' tests and any_model_jvp)
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-deps --no-index .whl/*.whl >"$DIR/wheels.log" 2>&1 || echo "wheels: see $DIR/wheels.log"
fi

# 1. environment
step env 30 bash -c "nvidia-smi; $PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"gpu\", torch.cuda.is_available())'; \
    $PY -c 'import triton; print(\"triton\", triton.__version__)'; $PY -m pip list 2>/dev/null | grep -i -E 'torch|triton|flash|pytest|matplotlib|numpy'; \
    git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null | head -20; nvcc --version 2>/dev/null | tail -2"

# 2. the optional csrc extension (in place; a failure only means no cuda/cpu backend rows)
if ((QUICK)); then
    printf 'build\tskipped: --quick\t0\n' >>"$SUMMARY"
else
    step build "$(budget 150 300)" env MAX_JOBS="${MAX_JOBS:-16}" "$PY" setup.py build_ext --inplace
fi
$PY -c "import sys; sys.path.insert(0, '.'); import mfkernels; print('backends:', sorted(mfkernels.available_backends()))" \
    >"$DIR/backends.txt" 2>&1
cat "$DIR/backends.txt"

# -v: each test's outcome is in the log as it ends, so a step cut short by its cap still
# says what passed; --durations: where the GPU time went, for the next run's caps.
PYTEST=("$PY" -m pytest -v -rfE --durations=15 -p no:cacheprovider)
$PY -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout=90)
TESTS=(tests)
((QUICK)) && TESTS=(tests/benchmarks)

# 3. GPU-only tests first: they are what this machine is for; then every tuned attention tile
# compiled (the suite runs one per kernel, MFK_AUTOTUNE=0, and the benchmarks autotune over all)
TILES=tests/mfkernels/test_attention_jvp.py::test_every_tuned_config
# The GPU tests took ~150 s on an H200 (2026-12-04), the tiles ~30 s (before d = 128, three
# ragged lengths and the atomic-dQ backward were added: expect ~2-4x). Two steps, each with its
# own report, so that a timeout in one keeps the other's: the trainer's (CUDA-graphed steps
# among them) first, then the kernels' (kernel variants, library backwards, candidate tiles).
if ((QUICK)); then
    step tests_gpu "$(budget 180 250)" "${PYTEST[@]}" -m gpu --junitxml="$DIR/tests_gpu.xml" "${TESTS[@]}"
else
    # The CUDA-graphed step's tests first (they decide whether --cuda_graphs defaults to auto).
    mapfile -t TRAINER < <(ls tests/meanflow/test_*.py | grep -vxF tests/meanflow/test_train_step.py)
    step tests_gpu_trainer "$(budget 100 330)" "${PYTEST[@]}" -m gpu --junitxml="$DIR/tests_gpu_trainer.xml" \
        tests/meanflow/test_train_step.py "${TRAINER[@]}"
    # Files whose GPU tests never ran on a GPU go first (as of 2026-12-05), then the others,
    # each named (a folder would put its files back in name order): a step cut short keeps
    # what ran first.
    FIRST=(tests/mfkernels/test_attention_library_backward.py tests/mfkernels/test_residual_backward.py
        tests/mfkernels/test_layernorm_edge_rows.py tests/mfkernels/test_sdpa_forward_ad.py
        tests/mfkernels/test_attention_groups_and_bias.py tests/mfkernels/test_attention_jvp.py)
    mapfile -t REST < <(ls tests/test_*.py tests/*/test_*.py | grep -v '^tests/meanflow/' |
        grep -vxF -f <(printf '%s\n' "${FIRST[@]}"))
    step tests_gpu "$(budget 150 250)" "${PYTEST[@]}" -m gpu --junitxml="$DIR/tests_gpu.xml" \
        "${FIRST[@]}" "${REST[@]}"
fi
if ((QUICK)); then  # without a GPU every tile runs in the interpreter: minutes
    printf 'tests_tiles\tskipped: --quick\t0\n' >>"$SUMMARY"
else
    step tests_tiles "$(budget 100 220)" "${PYTEST[@]}" --junitxml="$DIR/tests_tiles.xml" "$TILES"
fi

# 3b. the trainer's own step, eager and as one CUDA graph replay, at the per-device batches
# users train with (DiT-XL/2, batch 32 and 256, three objectives: 12 cases, ~5-10 s each)
b=$(budget 90 200)
if ((QUICK)); then
    step trainer_step 60 "$PY" benchmarks/trainer_step.py --quick --out-dir "$DIR"
else
    step trainer_step "$b" "$PY" benchmarks/trainer_step.py --presets DiT-XL/2 --batches 32 256 --steps 5 \
        --time-budget $((b - 20)) --out-dir "$DIR"
fi

# 3c. torch.func.jvp through DiT-XL/2-sized diffusers and timm models, math attention against
# patch_sdpa, at N = 1024 where the targets are (a library not installed: a skipped row)
b=$(budget 70 170)
if ((QUICK)); then
    step any_model_jvp 60 "$PY" benchmarks/any_model_jvp.py --quick --out-dir "$DIR"
else
    step any_model_jvp "$b" "$PY" benchmarks/any_model_jvp.py --tokens 1024 --repeats 3 \
        --time-budget $((b - 25)) --out-dir "$DIR"
fi

# 4. the training-step benchmark (the targets are judged on its DiT-XL/2 rows, measured first),
# then where the compiled DiT-XL/2 steps spend their time (FM vs fused: loss, backward, optimiser
# and the top kernels; 60-70 s with a cold compile cache)
QFLAG=()
((QUICK)) && QFLAG=(--quick)
b=$(budget 310 170)  # ~100 s after the tests: enough for the DiT-XL/2 target variants, compiled ones included
step jvp_throughput "$b" "$PY" benchmarks/jvp_throughput.py ${QFLAG[@]+"${QFLAG[@]}"} --time-budget $((b - 25)) --out-dir "$DIR"
if ((QUICK)); then
    step step_phases 60 "$PY" benchmarks/step_phases.py --preset DiT-T/4 --batch 2 --dtype fp32 --variants fm dual_ref \
        --steps 1 --out-dir "$DIR"
else
    b=$(budget 75 140)  # its JSON grows by a variant at a time: a cut keeps the first variant
    step step_phases "$b" "$PY" benchmarks/step_phases.py --time-budget $((b - 35)) --out-dir "$DIR"
fi

# 5. the attention kernel microbenchmark, then the row and pointwise ops against torch: csrc
# CUDA where the extension built, and Triton (~20 s)
b=$(budget 110 85)
step attention_jvp "$b" "$PY" benchmarks/attention_jvp.py ${QFLAG[@]+"${QFLAG[@]}"} --time-budget $((b - 20)) --out-dir "$DIR"
# causal, grouped-query and masked attention against full, math and SDPA (bias dtypes: docs)
b=$(budget 50 75)
step attention_features "$b" "$PY" benchmarks/attention_features.py ${QFLAG[@]+"${QFLAG[@]}"} --time-budget $((b - 15)) \
    --out-dir "$DIR"
# (the Triton rows, the LayerNorm-modulate kernels' TB/s among them, run without the extension)
step csrc_ops "$(budget 60 45)" "$PY" benchmarks/csrc_ops.py ${QFLAG[@]+"${QFLAG[@]}"} --out-dir "$DIR"

# 5b. where the 64-key-tile forward goes wrong at a ragged last key tile, one suspect at a time
# (docs/attention-tuning.md; ~25 compiled configs)
if ((QUICK)); then
    printf 'ragged_tile_repro\tskipped: --quick\t0\n' >>"$SUMMARY"
else
    step ragged_tile_repro "$(budget 60 40)" "$PY" benchmarks/scripts/ragged_tile_repro.py --out "$DIR/ragged_tile_repro.json"
fi

# 6. DiT-S/2 (host-bound at batch 64: ~6 ms of launches per block for the fused step, 2026-12-04)
# and DiT-XL/2 (GPU-bound) with their compiled blocks replayed as CUDA graphs (~80 s)
if ((QUICK)); then
    printf 'jvp_throughput_cudagraphs\tskipped: --quick\t0\n' >>"$SUMMARY"
else
    b=$(budget 90 60)
    step jvp_throughput_cudagraphs "$b" "$PY" benchmarks/jvp_throughput.py --compile-mode cudagraphs \
        --presets DiT-S/2 DiT-XL/2 --batches 64 --variants fm+compile fused_triton+compile --no-check --no-forward \
        --time-budget $((b - 15)) --out-dir "$DIR"
fi

# 7. DiT-XL/2 with the engine's default loss (du/dt on the rows with r != t only)
if ((QUICK)); then
    printf 'jvp_throughput_r_neq_t\tskipped: --quick\t0\n' >>"$SUMMARY"
else
    b=$(budget 90 0)
    step jvp_throughput_r_neq_t "$b" "$PY" benchmarks/jvp_throughput.py --tangent-rows r_neq_t --presets DiT-XL/2 \
        --variants fm fm+compile fused_triton fused_triton+compile --no-check --time-budget $((b - 15)) --out-dir "$DIR"
fi

# 8. if time is left: the rest of the suite, on this machine (CI runs it on the CPU anyway)
if ((QUICK)); then
    printf 'tests_rest\tskipped: --quick\t0\n' >>"$SUMMARY"
else
    step tests_rest "$(budget 200 0)" "${PYTEST[@]}" -m "not gpu" --deselect "$TILES" --junitxml="$DIR/tests_rest.xml" "${TESTS[@]}"
fi

# 9. the README section these results would give (README.md itself is left alone)
$PY benchmarks/render_readme.py --results "$DIR" --output "$DIR/perf_section.md" >"$DIR/render.log" 2>&1 ||
    echo "render_readme failed: see $DIR/render.log"

# 10. summary
$PY - "$DIR" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, ".")
try:  # the targets' headings as jvp_throughput.py prints them; the summary works without
    from benchmarks.step_report import targets_heading, why_no_targets
except Exception as exc:
    print(f"(benchmarks.step_report did not import: {exc})")
    targets_heading = why_no_targets = None
d = Path(sys.argv[1])
print("\n==== summary:", d)
rows = [line.split("\t") for line in (d / "summary.tsv").read_text().splitlines()]
w = [max(len(r[i]) for r in rows) for i in range(3)]
for r in rows:
    print("  " + "  ".join(c.ljust(n) for c, n in zip(r, w)))
for xml in sorted(d.glob("tests_*.xml")):
    try:
        s = ET.parse(xml).getroot()
        s = s if s.tag == "testsuite" else s.find("testsuite")
        a = {k: int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        passed = a["tests"] - a["failures"] - a["errors"] - a["skipped"]
        print(f"  {xml.stem}: {passed} passed, {a['failures']} failed, {a['errors']} errors, {a['skipped']} skipped")
        # Untuned d = 72 tiles (attention_configs.CANDIDATES): those that pass may move into TUNED.
        for case in s.iter("testcase"):
            if case.get("name", "").startswith("test_gpu_candidate_config"):
                failed = case.find("failure") is not None or case.find("error") is not None
                skipped = case.find("skipped") is not None
                print(f"    {case.get('name')}: {'FAILED' if failed else 'skipped' if skipped else 'passed'}")
    except Exception as exc:
        print(f"  {xml.stem}: unreadable ({exc})")
for js in sorted(d.glob("jvp_throughput_*.json")):
    data = json.loads(js.read_text())
    rows = data.get("rows", [])
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"  {js.name}: {ok}/{len(rows)} cases ok")
    if targets_heading:
        targets, settings = data.get("targets", []), data.get("settings", {})
        print(f"    {targets_heading(targets)}" if targets else f"    Targets: {why_no_targets(settings)}")
    for t in data.get("targets", []):
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        value = f": {t['value']:.2f} (threshold {t['threshold']})" if "value" in t else ""
        print(f"    [{mark}] {t['name']}{value}  {t['detail']}")
for js in sorted(d.glob("step_phases_*.json")):
    for r in json.loads(js.read_text())["rows"]:
        if "step_ms" in r:
            print(f"  phases {r['variant']}: step {r['step_ms']:.1f} ms = loss {r['loss_ms']:.1f} + backward "
                  f"{r['backward_ms']:.1f} + optimizer {r['optimizer_ms']:.1f}; unsplit {r['wall_ms']:.1f} ms, "
                  f"host {r['host_ms']:.1f}, device busy {r['device_busy_ms']}")
        else:
            print(f"  phases {r['variant']}: {r['status']}")
for js in sorted(d.glob("csrc_ops_*.json")):
    rows = [r for r in json.loads(js.read_text()) if r["backend"] in ("cuda", "triton")]
    for r in rows:
        print(f"  ops {r['backend']} {r['op']} {r['shape']} {r['dtype']}: {r['GB/s']:.0f} GB/s, {r['vs_reference']:.2f}x torch")
for js in sorted(d.glob("attention_jvp_*.json")):
    data = json.loads(js.read_text())
    rows = [r for r in data.get("rows", []) if r.get("variant") == "ours_jvp" and r["status"] == "ok"]
    if rows:
        best = max(rows, key=lambda r: r["tflops"])
        print(f"  {js.name}: ours JVP best {best['tflops']:.4g} TFLOP/s ({best['dtype']} d={best['d']} N={best['N']})")
    else:
        print(f"  {js.name}: no ours_jvp timing")
    # The opt-in kernel variants against the defaults, shape by shape (docs/attention-tuning.md):
    # a default flips only where its variant is faster at the DiT shapes and its tests passed.
    ms = {}
    for r in data.get("rows", []):
        if r["status"] == "ok":
            ms.setdefault((r["dtype"], r["d"], r["N"], r["batch"] * r["heads"]), {})[r["variant"]] = r["ms"]
    for (dtype, d_, n, bh), times in ms.items():
        for base, variants in (("ours_jvp", ["ours_jvp_tma"]),
                               ("ours_bwd", ["ours_bwd_atomic", "ours_bwd_cudnn", "ours_bwd_flash"])):
            alts = [f"{v.removeprefix(base + '_')} {times[base] / times[v]:.2f}x" for v in variants if v in times]
            if base in times and alts:
                print(f"    {dtype} d={d_} N={n} BxH={bh}: {base} {times[base]:.3f} ms, variants' speedup: {', '.join(alts)}")
for js in sorted(d.glob("attention_features_*.json")):
    # Each feature's time over full attention's, ours against SDPA's (which has no JVP).
    for r in json.loads(js.read_text()).get("rows", []):
        if r.get("variant") in ("ours_jvp", "ours_bwd", "sdpa_bwd") and r.get("feature") != "full":
            x = f"{r['x_full']:.2f}x full" if "x_full" in r else r["status"]
            print(f"  features {r['dtype']} d={r['d']} N={r['N']} {r['feature']} {r['variant']}: {x}")
print("  files:", ", ".join(sorted(p.name for p in d.iterdir())))
EOF
echo "total $(($(date +%s) - START))s of ${TOTAL}s"
if [[ -n "${OUT:-}" ]] && tar czf "$OUT/gpu_validate.tgz" -C "$OUT" gpu_validate; then
    cp "$SUMMARY" "$OUT/summary.tsv" && rm -rf "$DIR"
    echo "packed into $OUT/gpu_validate.tgz (tar xzf it under benchmarks/results/)"
fi
