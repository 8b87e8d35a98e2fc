#!/usr/bin/env bash
# The test command: installs what the tests need into .venv, checks style, runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh test
.venv/bin/ruff check .
# The Slicer module's MRML layer runs against the real slicer-core wheel, which pins its own
# VTK: it gets an environment of its own.
bash scripts/setup-slicer-venv.sh
PYTHONPATH=MedTuningSegment .venv-slicer/bin/python -m pytest -p no:cacheprovider MedTuningSegment/Testing/Python "$@"
exec .venv/bin/python -m pytest "$@"
