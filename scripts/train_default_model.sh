#!/usr/bin/env bash
# Train (or resume) the bundled default model. Safe to run again: it resumes from the last
# checkpoint with the same split. The run folder lives outside the repository.
#   bash scripts/train_default_model.sh [RUN_DIR] [extra train flags...]
# The ResNet-50 arm of the recipe comparison (docs/default-model.md):
#   bash scripts/train_default_model.sh ~/.cache/face-emotion/runs/resnet50-48-gray \
#       --arch resnet50 --weights none --image-size 48 --lr 1e-3
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-$HOME/.cache/face-emotion/runs/lite0-64-gray}
shift || true
DATA=$HOME/.cache/face-emotion/data
if [ ! -d "$DATA/fer2013" ]; then
  mkdir -p "$HOME/.cache/face-data"
  for f in ../shared/data/*.tar.gz; do tar -xzf "$f" -C "$HOME/.cache/face-data"; done
  .venv/bin/python scripts/prepare_default_data.py "$HOME/.cache/face-data" "$DATA"
fi
mkdir -p "$RUN"
# Two OpenMP threads that must share the cores with other work spin and slow each other
# down many times over; TRAIN_THREADS=1 keeps a shared machine usable.
export OMP_NUM_THREADS=${TRAIN_THREADS:-2}
# Idle OpenMP threads sleep instead of spinning: far less harm when anything else runs.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec nice -n 5 .venv/bin/face-emotion train "$DATA/fer2013" "$DATA/affectnet96-agree" --out "$RUN" \
  --classes anger,disgust,fear,happiness,sadness,surprise,neutral \
  --arch efficientnet_lite0 --weights imagenet --image-size 64 --color-mode grayscale --dropout 0.3 \
  --epochs 40 --patience 8 --batch-size 64 --lr 5e-4 --label-smoothing 0.1 --workers 1 \
  --face-margin 0.1 --name face-emotion-default --no-detect --no-progress --resume "$@" >> "$RUN/train.log" 2>&1
