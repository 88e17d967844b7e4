#!/usr/bin/env bash
# The GPU half of a study: train, evaluate and probe the seeds of a recipe, then pack the run
# folders without checkpoints into one tarball to bring home and render with
#   python -m sclib study --runs RUNS --out results/DATASET
#
# usage: bash scripts/gpu_study.sh DATASET RUNS TARBALL [pretrain flags...]
#   e.g. bash scripts/gpu_study.sh cifar10 runs/cifar10-gpu $OUT/cifar10-gpu.tgz --preset gpu --data-root data
# Default seeds 0 1 2 and preset gpu; any pretrain flag (--seeds, --preset, --epochs, ...) overrides.
# Needs only PyTorch, torchvision, numpy, scipy, scikit-learn, tqdm and PyYAML on the GPU machine.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash scripts/gpu_study.sh DATASET RUNS TARBALL [pretrain flags...]" >&2
  exit 2
fi
dataset=$1 runs=$2 tarball=$3
shift 3
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
"$python" -m sclib pretrain --dataset "$dataset" --preset gpu --seeds 0 1 2 --out "$runs" --no-progress "$@"
trained=$(date +%s)
"$python" -m sclib evaluate --run "$runs"
"$python" -m sclib probe --run "$runs" --all-kept
echo "gpu_study: trained in $((trained - start)) s, evaluated and probed in $(($(date +%s) - trained)) s"
tar czf "$tarball" --exclude checkpoints "$runs"
echo "gpu_study: $(du -h "$tarball" | cut -f1) in $tarball"
