#!/usr/bin/env bash
# One GPU check, for a machine with an NVIDIA GPU (sm_80+), CuPy for CUDA 13, PyTorch and
# compute-sanitizer; no network, no z3/egglog needed. Runs from a checkout (no install):
#   bash benchmarks/gpu_check.sh [gpu_check.py options]      e.g. --json-out gpu.json
#   bash benchmarks/gpu_check.sh --dry-run                   on a machine without a GPU
# Emits the six experts (and specs, and search winners with --winners DIR), builds them
# with CuPy, checks them against PyTorch, runs compute-sanitizer memcheck and racecheck once
# each at small size, prints medians (L2 flushed) of ours / PyTorch eager / torch.compile,
# the GPU's name and Kendall tau between modelled and measured ranking. Finishes in < 8 min.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

echo "== environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
"$PY" - <<'PY'
import importlib
for m in ("numpy", "cupy", "torch"):
    try:
        print(f"{m} {importlib.import_module(m).__version__}")
    except Exception as e:  # report and go on: gpu_check.py says what it cannot do
        print(f"{m}: not importable ({type(e).__name__}: {e})")
PY
command -v compute-sanitizer >/dev/null && echo "compute-sanitizer: $(command -v compute-sanitizer)" \
    || echo "compute-sanitizer: not found (sanitizer steps will be reported as not run)"

echo "== gpu_check.py $*"
# A hard stop below 8 minutes; gpu_check.py drops optional work (torch.compile) after 7.
exec timeout 470 "$PY" benchmarks/gpu_check.py "$@"
