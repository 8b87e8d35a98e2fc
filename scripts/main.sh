#!/usr/bin/env bash
# The main job: installs MedTuning into .venv and runs `medtuning` with the given arguments
# (default: the parameter counts of the paper's ViT-B/16 + UPerNet Med-Tuning model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
if [ "$#" -eq 0 ]; then
  set -- model-info --backbone vit_base_patch16_224 --decoder upernet --tuning med_adapter
fi
exec .venv/bin/medtuning "$@"
