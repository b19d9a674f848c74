#!/usr/bin/env bash
# One call on a machine with a CUDA GPU (fits a 10-minute slot): the GPU tests, then the GPU
# benchmark. Paste the benchmark's lines into bench/RESULTS.md ("GPU") with the card and date.
#   bash bench/gpu_check.sh            (from the repository root)
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "== GPU tests (at most 3 minutes)"
timeout 180 $PY -m pytest -q -x tests/test_gan_gpu.py tests/test_gan_precision.py \
  tests/test_gan_loss.py -p no:cacheprovider
echo "tests rc=$?"
echo "== bench/train.py --gpu-only (at most 6.5 minutes; 0.5 kimg per variant)"
timeout 390 $PY -u bench/train.py --gpu-only --kimg 0.5
echo "bench rc=$? (124 = cut by the time limit: the variants printed above are complete)"
