#!/usr/bin/env bash
# The base install, checked as a new user gets it (called by `make test`, so CI runs it):
#  1. build the wheel from this checkout (`pip wheel .`: setup.py vendors onnxruntime-web);
#  2. install it with no extras into a fresh venv: at most BASE_LIMIT_MB, and `import torch` fails;
#  3. add the test tools alone (the [test] extra: pytest, Playwright, ... never torch) and run the
#     inference tests there, one of them in a real Chromium.
# Usage: scripts/check_base_install.sh [WORK_DIR]   (default: a temporary folder, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
BASE_LIMIT_MB=${BASE_LIMIT_MB:-500}
WORK=${1:-$(mktemp -d)}
[ -n "${1:-}" ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"

echo "base install: building the wheel"
rm -rf "$WORK/dist"
$PYTHON -m pip wheel --no-deps --quiet -w "$WORK/dist" . 2>&1 | grep -v "is ignored" || true
WHEEL=$(ls "$WORK"/dist/face_emotion_kit-*.whl)

rm -rf "$WORK/venv"
$PYTHON -m venv "$WORK/venv"
start=$(date +%s)
"$WORK/venv/bin/pip" install --quiet "$WHEEL" 2>&1 | grep -v "is ignored" || true
took=$(( $(date +%s) - start ))
size=$(du -sm "$WORK/venv" | cut -f1)
echo "base install: ${size} MB for a fresh venv, pip included (limit ${BASE_LIMIT_MB} MB), installed in ${took} s"
if [ "$size" -gt "$BASE_LIMIT_MB" ]; then
  echo "base install: ${size} MB is over the ${BASE_LIMIT_MB} MB budget" >&2
  "$WORK/venv/bin/python" -m pip list >&2
  exit 1
fi
if "$WORK/venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "base install: torch is importable, but the base must not bring it" >&2
  exit 1
fi

"$WORK/venv/bin/pip" install --quiet "$WHEEL[test]" 2>&1 | grep -v "is ignored" || true
if "$WORK/venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "base install: the test tools brought torch" >&2
  exit 1
fi
# The inference lane: the modules that exercise what the base install promises (predict, evaluate,
# export, serve and its page, the Python API), from the checkout's tests against the installed wheel
# (run from tests/, so the checkout's src/ is not on the path). Tests that need an extra skip and
# say which (tiny test models are built with torch).
BASE_TESTS=(
  test_base_install.py test_api.py test_pipeline.py test_results.py test_imageio.py test_faces.py
  test_export.py test_metrics.py test_readme.py test_server_api.py test_hostile_uploads.py
  test_service_limits.py test_on_device_files.py
  "test_ondevice_browser.py::test_on_this_device_answers_as_the_server_does_on_real_photos"
)
cd tests
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider -o addopts="-ra" --rootdir=.. -c ../pyproject.toml \
  "${BASE_TESTS[@]}"
