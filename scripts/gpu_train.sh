#!/usr/bin/env bash
# The default-model recipe on a lent GPU, from a training pack, in one device call:
#   1. a ResNet-50 teacher at 112 px from scratch on both framings of the pack's crops,
#   2. its mirror-averaged logits over the pack, averaged with the pack's own teacher rows,
#   3. the EfficientNet-Lite0 student from the bundled model, distilled from them,
# and the run folders' small files into $OUT, which the device tool brings back.
#
# Here, once:  face-emotion pack DATA... --out .pack/pack.npz ... (docs/default-model.md; the tree and
#              the pack together must stay under the 64 MiB a device call carries), and
#              (.pack/ is git-ignored: it travels as a carried folder)
#              mkdir -p .pack/site && cp -r .venv/lib/python3.*/site-packages/efficientnet_lite_pytorch .pack/site/
#              (the Lite0 model code, pure Python: the device image has torch, lightning and the rest)
# Device:      run(command="bash scripts/gpu_train.sh", carry=[".pack"], timeout_s=600)
# On a CPU (the end-to-end test): OUT=/tmp/x ACCEL=cpu TEACHER_EPOCHS=1 ... bash scripts/gpu_train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=${PACK:-.pack/pack.npz}
OUT=${OUT:?set OUT to the folder that comes back}
WORK=${WORK:-runs/gpu}
PY=${PYTHON:-python3}
ACCEL=${ACCEL:-gpu}
TEACHER_ARCH=${TEACHER_ARCH:-resnet50}
TEACHER_SIZE=${TEACHER_SIZE:-112}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-30}
TEACHER_MINUTES=${TEACHER_MINUTES:-3}
STUDENT_INIT=${STUDENT_INIT:-bundled}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-20}
STUDENT_MINUTES=${STUDENT_MINUTES:-3}
BATCH=${BATCH:-512}
export PYTHONPATH=$PWD/src:$PWD/.pack/site${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import efficientnet_lite_pytorch, pytorch_lightning, torchmetrics" \
  || { echo "missing Python packages: copy efficientnet_lite_pytorch into .pack/site (see the header)"; exit 1; }
$PY -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
mkdir -p "$OUT" "$WORK"
started=$(date +%s)
common=(--bank "$PACK" --accelerator "$ACCEL" --devices 1 --batch-size "$BATCH" --framings both --zoom-out 1.2
        --schedule cosine --patience 1000 --label-smoothing 0.1 --weight-decay 0.05 --no-progress)
$PY -m face_emotion train "${common[@]}" --out "$WORK/teacher" --arch "$TEACHER_ARCH" --weights none \
  --image-size "$TEACHER_SIZE" --color-mode grayscale --dropout 0.2 --lr 2e-3 --epochs "$TEACHER_EPOCHS" \
  --max-minutes "$TEACHER_MINUTES" 2>&1 | tee "$WORK/teacher.log"
echo "teacher done after $(( $(date +%s) - started )) s"
$PY scripts/pack_logits.py "$PACK" "$WORK/teacher-logits.csv" --model "$WORK/teacher" --with-pack
$PY -m face_emotion train "${common[@]}" --out "$WORK/student" --init "$STUDENT_INIT" --adapt off --dropout 0.3 \
  --lr 1e-3 --epochs "$STUDENT_EPOCHS" --max-minutes "$STUDENT_MINUTES" --distill "$WORK/teacher-logits.csv" \
  --distill-alpha 0.5 --distill-temperature 2 --name face-emotion-default 2>&1 | tee "$WORK/student.log"
echo "student done after $(( $(date +%s) - started )) s"
# At most 8 files come back, each under 16 MB: the student whole, the teacher's figures.
cp "$WORK/student/model.safetensors" "$WORK/student/model.json" "$WORK/student/metrics.json" "$OUT/"
cp "$WORK/student.log" "$WORK/teacher.log" "$OUT/"
cp "$WORK/student/logs/metrics.csv" "$OUT/student-epochs.csv"
cp "$WORK/teacher/metrics.json" "$OUT/teacher-metrics.json"
echo "done in $(( $(date +%s) - started )) s; files in $OUT"
