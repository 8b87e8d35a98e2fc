#!/usr/bin/env bash
# Run 27 (docs/results/recipe_cv.md) in one GPU lease: `recipe_cv.py run --plan gpu-long` on a
# bare node with torch, timm, numpy, scipy and CUDA. Before the lease, here:
#   python bench/recipe_cv.py prepare          # .gpu/: the cases and the backbone (float16)
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl monai
# then on the node, carrying .gpu and .whl:  bash bench/gpu_long.sh
# What comes back ($OUT, or results/ without one): run.log, results.json, the jobs' logs and
# the kept tensors (the 4 folds and the set on all cases), at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
mkdir -p "$OUT"
RUN=${RUN:-/tmp/gpu_long}
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    nproc
    python3 -c "import torch, timm, monai, numpy; print(torch.__version__, timm.__version__, monai.__version__, numpy.__version__)"
} 2>&1 | tee "$OUT/run.log"
# gpu-long: 9 jobs, each 7 minutes of training; the budget stops whatever still runs at 500 s (it scores what it has)
PYTHONUNBUFFERED=1 python3 bench/recipe_cv.py run --plan "${PLAN:-gpu-long}" --device cuda --jobs "${JOBS:-9}" --threads 1 \
    --budget "${BUDGET:-500}" --out "$RUN" 2>&1 | tee -a "$OUT/run.log"
cp "$RUN/results.json" "$OUT/" 2>/dev/null
cp "$RUN"/*.safetensors "$OUT/" 2>/dev/null
tar czf "$OUT/jobs.tar.gz" -C "$RUN" jobs 2>/dev/null
ls -la "$OUT"
