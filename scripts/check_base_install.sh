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
# export, serve and its page, the Python API), from the checkout's tests against the installed wheel.
# Tests that need an extra skip with its name (e.g. tiny models need torch to be built).
cd tests
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider -o addopts="" -m "base_install" \
  --rootdir=.. -c ../pyproject.toml .
