#!/usr/bin/env bash
# The environment for the Slicer-layer tests: the slicer-core wheel (Slicer's MRML and logics,
# no GUI; it pins vtk) with SimpleITK, numpy and pytest. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=$(sha256sum scripts/setup-slicer-venv.sh | cut -d' ' -f1)
if [ -f .venv-slicer/.medtuning-stamp ] && [ "$(cat .venv-slicer/.medtuning-stamp)" = "$stamp" ]; then
  exit 0
fi
echo "Setting up .venv-slicer (slicer-core)..." >&2
[ -x .venv-slicer/bin/python ] || "$PYTHON" -m venv .venv-slicer
.venv-slicer/bin/python -m pip install --quiet --disable-pip-version-check "slicer-core==5.13.31053.0" SimpleITK numpy pytest
echo "$stamp" > .venv-slicer/.medtuning-stamp
