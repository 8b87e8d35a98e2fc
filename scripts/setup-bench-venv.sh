#!/usr/bin/env bash
# The benchmark environment .venv-bench: everything in .venv plus MONAI (for the comparison
# with monai.inferers.sliding_window_inference). MONAI stays out of .venv: MedTuning does
# not use it. .venv-bench sees .venv's packages through a .pth file, so torch is not
# installed twice; MONAI needs only torch and numpy, hence --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
PYTHON=${PYTHON:-python3}
[ -x .venv-bench/bin/python ] || "$PYTHON" -m venv .venv-bench
main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
bench_site=$(.venv-bench/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$main_site')" > "$bench_site/medtuning-main-venv.pth"
.venv-bench/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "monai==1.6.1"
.venv-bench/bin/python -c "import monai, torch; print('monai', monai.__version__, 'torch', torch.__version__)"
