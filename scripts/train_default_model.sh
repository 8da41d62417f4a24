#!/usr/bin/env bash
# Train (or resume) the bundled default model. Safe to run again: it resumes from the last
# checkpoint with the same split. The run folder lives under runs/ (git-ignored) and the run
# starts from the bundled model (--init bundled), so even a lost run folder only loses the
# fine-tune, never the starting point.
#   bash scripts/train_default_model.sh [RUN_DIR] [extra train flags...]
# v2 (shipped) came from two runs, see docs/default-model.md: run A = these flags without
# --face-resolution, 3e-4, from v1 (git commit 6fdc535); run B = these flags, --init run A's
# best epoch. Run as is, the script fine-tunes the shipped model further.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default-v2}
shift || true
DATA=${FACE_EMOTION_DATA:-$HOME/.cache/face-emotion/data}
if [ ! -d "$DATA/fer2013-ferplus" ]; then
  mkdir -p "$HOME/.cache/face-data"
  for f in ../shared/data/*.tar.gz; do tar -xzf "$f" -C "$HOME/.cache/face-data"; done
  .venv/bin/python scripts/prepare_default_data.py "$HOME/.cache/face-data" "$DATA" \
    --votes ../shared/data/ferplus-train-votes.csv
fi
mkdir -p "$RUN"
# Two OpenMP threads that must share the cores with other work spin and slow each other
# down many times over; TRAIN_THREADS=1 keeps a shared machine usable.
export OMP_NUM_THREADS=${TRAIN_THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec nice -n 5 .venv/bin/face-emotion train "$DATA/fer2013-ferplus" "$DATA/lfw-expressions" "$DATA/affectnet96-agree" \
  --out "$RUN" --init bundled --classes anger,disgust,fear,happiness,sadness,surprise,neutral \
  --image-size 80 --face-margin 0.0 --face-align landmarks --face-resolution 48 --dropout 0.3 --epochs 2 --patience 4 \
  --batch-size 64 --lr 2e-4 --label-smoothing 0.1 --workers 1 --val-fraction 0.1 --test-fraction 0.1 \
  --name face-emotion-default --no-progress --resume "$@" >> "$RUN/train.log" 2>&1
