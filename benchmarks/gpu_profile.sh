#!/usr/bin/env bash
# The GPU profile in one sitting (about 10 minutes on one GPU): the speed benchmark, the
# per-operator profile, the pixel pipeline's speed, and the state Q-Transformer cell in fp32,
# bf16 and compiled beside IQL's (seed 0 of `noisy`), all on CUDA. Results go to
# benchmarks/results/gpu/ (JSON and markdown, each with the machine and the command).
#
#   make .venv/.installed && bash benchmarks/gpu_profile.sh
#
# It refuses to run without a CUDA device: CPU figures come from the scripts themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu}
WORK=${WORK:-runs/gpu}
mkdir -p "$OUT" "$WORK"
$PY - <<'PYCHECK'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this script profiles a GPU (see benchmarks/speed.py for the CPU)")
print("profiling", torch.cuda.get_device_name(0), "torch", torch.__version__)
PYCHECK
$PY benchmarks/speed.py --device cuda --out "$OUT/speed.json"
$PY benchmarks/op_profile.py --device cuda --label gpu --out "$OUT/op_profile.json"
$PY benchmarks/pixel_speed.py --device cuda --out "$OUT"
$PY benchmarks/precision.py --seeds 0 --work "$WORK" --out "$OUT/precision.jsonl"
echo "wrote $OUT"
