#!/usr/bin/env bash
# bench/gpu.sh on a bare GPU node that has torch, timm, pytest and safetensors but neither
# SimpleITK, MONAI nor ../shared. Before the lease, here (.lease is in .git/info/exclude):
#   mkdir -p .lease/data/brats2013 && cp -r ../shared/data/brats2013/pat0003 .lease/data/brats2013/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d /tmp/w SimpleITK monai
#   unzip the SimpleITK wheel and `tar cf - . | xz -9e > .lease/sitk.tar.xz` (28 MB instead of
#   the wheel's 53 MB: with the repository the wheel is over the 64 MiB a call carries);
#   cp /tmp/w/monai-*.whl .lease/
# then, carrying .lease:  OUT=$OUT bash bench/gpu_node.sh  -> $OUT/gpu.tar.gz, $OUT/gpu.log
# (GPU_SCRIPT=bench/gpu_followup.sh for the rows a first lease did not reach)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
mkdir -p "$OUT" /tmp/site
tar xJf .lease/sitk.tar.xz -C /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .lease/*.whl
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
if [ ! -d ../shared/data/brats2013 ]; then
    mkdir -p ../shared/data && cp -r .lease/data/brats2013 ../shared/data/
fi
python3 -c "import torch, timm, monai, SimpleITK, safetensors; print(torch.__version__, timm.__version__, monai.__version__, SimpleITK.Version_VersionString())" 2>&1 | tee "$OUT/gpu.log"
# the whole run stops in time to pack what it has
RESULTS=/tmp/gpu timeout --kill-after=10 "${GPU_SECONDS:-540}" bash "${GPU_SCRIPT:-bench/gpu.sh}" 2>&1 | tee -a "$OUT/gpu.log"
tar czf "$OUT/gpu.tar.gz" -C /tmp gpu
ls -la "$OUT"
