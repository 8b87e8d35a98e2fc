#!/usr/bin/env bash
# The test command: installs what the tests need into .venv, checks style, runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
