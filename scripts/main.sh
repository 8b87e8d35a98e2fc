#!/usr/bin/env bash
# The main job: installs MedTuning into .venv and runs `medtuning` with the given arguments
# (default: `medtuning demo`, the shipped brain-tissue set on the MNI152 T1 template, offline,
# writing ./medtuning-demo/{tissue.nii.gz,montage.png,report.md,report.json}).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
if [ "$#" -eq 0 ]; then
  set -- demo --out medtuning-demo
fi
exec .venv/bin/medtuning "$@"
