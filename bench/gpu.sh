#!/usr/bin/env bash
# Everything only a GPU can show, in one run: the CUDA tests, then every benchmark on cuda.
# Results go to docs/results/gpu/ (or $RESULTS); copy them back and quote them in docs/.
#
#   bash bench/gpu.sh                 # in an environment with torch (CUDA), timm, SimpleITK,
#                                     # safetensors, pytest; MONAI for its comparison rows
#
# Each step writes its own file and a failed step does not stop the others, so a short lease
# still brings back what finished. The volume is BraTS 2013 pat0003 from ../shared/data.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-docs/results/gpu}
mkdir -p "$RESULTS"
"$PYTHON" - <<'EOF' | tee "$RESULTS/device.txt"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

source bench/gpu_steps.sh  # step NAME SECONDS COMMAND...
# The limits add up to 520 s, under gpu_node.sh's 540 s for the whole run: when that outer
# limit strikes, a step's own `timeout` (a process group of its own) would run on.

step cuda_tests 100 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda Testing/Python/test_cuda.py
# the adapters' depth-wise convolutions: nn.Conv3d against the 2D path (docs/results/gpu/README.md)
step slab_conv 40 "$PYTHON" bench/slab_conv_speed.py --device cuda
# issue 14's GPU target: ViT-B/16 + UPerNet Med-Adapter on the 240 x 240 x 155 volume at 1 mm
step inference_vit_b 100 "$PYTHON" bench/inference_baselines.py --device cuda --model vit_b_upernet --json "$RESULTS/inference_vit_b.json"
step finetune_cost 140 "$PYTHON" bench/finetune_cost.py --device cuda --models vit_s,vit_b --batch 2 --depth 32 \
    --configs full,head,adapter,lora,med_adapter_paper,med_adapter_paper+bf16,med_adapter_late+bf16,med_adapter_paper+ckpt+bf16
step inference_brats 60 "$PYTHON" bench/inference_baselines.py --device cuda --model brats-glioma --json "$RESULTS/inference_brats.json"
step speed 50 "$PYTHON" bench/inference_speed.py --device cuda --models vit_s,vit_b --configs default,fast,whole,tta
step profile_vit_b 30 "$PYTHON" bench/inference_profile.py --device cuda --model vit_b_upernet
echo "done: $RESULTS"
