#!/usr/bin/env bash
# Train (or resume) the bundled default model, v3. Safe to run again: it resumes from the last
# checkpoint with the same split. The run folder lives under runs/ (git-ignored).
#   bash scripts/train_default_model.sh [RUN_DIR] [extra train flags...]
# INIT=MODEL (a run folder or model file) continues from another model; LR and EPOCHS as named.
# v3 (docs/default-model.md): starts from the GPU check's EfficientNet-Lite0
# (../shared/gpu-check/efficientnet_lite0-80.safetensors), trains on both framings of every crop
# (the detector's template crop and the file as given), FER+ vote distributions as soft labels,
# and distils the GPU check's two-network mean logits. The GPU check's check split is the test
# split (none of the starting or teacher models saw it).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default-v3}
shift || true
SHARED=${FACE_EMOTION_SHARED:-../shared}
DATA=${FACE_EMOTION_DATA:-$HOME/.cache/face-emotion/data-v3}
if [ ! -d "$DATA/fer2013-ferplus/train" ]; then
  mkdir -p "$HOME/.cache/face-data"
  for f in "$SHARED"/data/*.tar.gz; do tar -xzf "$f" -C "$HOME/.cache/face-data"; done
  .venv/bin/python scripts/prepare_default_data.py "$HOME/.cache/face-data" "$DATA" \
    --votes "$SHARED/data/ferplus-train-votes.csv" --holdout "$SHARED/gpu-check/teacher-logits.csv"
fi
mkdir -p "$RUN"
# Two OpenMP threads that must share the cores with other work spin and slow each other
# down many times over; TRAIN_THREADS=1 keeps a shared machine usable.
export OMP_NUM_THREADS=${TRAIN_THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/face-emotion train "$DATA/fer2013-ferplus" "$DATA/lfw-expressions" "$DATA/affectnet96-agree" \
  --out "$RUN" --init "${INIT:-$SHARED/gpu-check/efficientnet_lite0-80.safetensors}" \
  --classes anger,disgust,fear,happiness,sadness,surprise,neutral \
  --framings both --zoom-out 1.2 --soft-labels "$DATA/ferplus-soft-labels.csv" \
  --distill "$SHARED/gpu-check/teacher-logits.csv" --distill-alpha 0.5 --distill-temperature 2 \
  --dropout 0.3 --epochs ${EPOCHS:-4} --patience 100 --schedule cosine --lr ${LR:-3e-4} --weight-decay 0.05 \
  --batch-size 64 --label-smoothing 0.1 --val-fraction 0.05 \
  --name face-emotion-default --no-progress --resume "$@" >> "$RUN/train.log" 2>&1
