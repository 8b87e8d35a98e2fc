#!/usr/bin/env bash
# The second call of the 2026-12-04 lease: the CUDA tests again after the fixes the first call
# found, and the rows of bench/gpu.sh that the first call's step limits cut off (each of its
# benchmark rows is a fresh process, about 15 s on the node, nearly all of it start-up).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-docs/results/gpu}
mkdir -p "$RESULTS"
source bench/gpu_steps.sh
step cuda_tests 50 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda Testing/Python/test_cuda.py
step finetune_cost_rest 100 "$PYTHON" bench/finetune_cost.py --device cuda --models vit_s,vit_b --batch 2 --depth 32 \
    --steps 10 --configs full,med_adapter_paper+bf16,med_adapter_late+bf16,med_adapter_paper+ckpt+bf16
step inference_brats_rest 70 "$PYTHON" bench/inference_baselines.py --device cuda --model brats-glioma --methods monai,backbone-once,medtuning --tta off,on
step profile_vit_b 35 "$PYTHON" bench/inference_profile.py --device cuda --model vit_b_upernet
echo "done: $RESULTS"
