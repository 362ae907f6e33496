#!/usr/bin/env bash
# one-off: GPU measurements missing from the 2026-12-04 H200 results
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
unset TRITON_INTERPRET
D=$OUT/run1; mkdir -p $D
T0=$(date +%s)
el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
el build; MAX_JOBS=16 timeout 90 python3 setup.py build_ext --inplace > $D/build.log 2>&1; echo rc=$?; tail -2 $D/build.log
python3 -c "import sys; sys.path.insert(0,'.'); import mfkernels; print(sorted(mfkernels.available_backends()))"
el step_phases; timeout 100 python3 benchmarks/step_phases.py --out-dir $D --top 25 > $D/step_phases.log 2>&1; echo rc=$?
el csrc; timeout 45 python3 benchmarks/csrc_ops.py --out-dir $D > $D/csrc_ops.log 2>&1; echo rc=$?
el attention; timeout 110 python3 benchmarks/attention_jvp.py --head-dims 64 128 --seqlens 1024 2048 4096 8192 16384 --time-budget 95 --out-dir $D > $D/attention_jvp.log 2>&1; echo rc=$?
el presets; timeout 150 python3 benchmarks/jvp_throughput.py --presets DiT-S/2 DiT-B/2 DiT-L/2 --batches 64 --variants fm+compile fused_triton+compile func_jvp fused_triton --no-check --time-budget 135 --out-dir $D > $D/jvp_throughput.log 2>&1; echo rc=$?
el done
cd $OUT && tar czf run1.tgz run1
