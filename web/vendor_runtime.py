"""Copy onnxruntime-web's runtime files (pinned in web/package-lock.json) into the page's static folder.

    python web/vendor_runtime.py           # npm ci when node_modules lacks them, then copy

The one home of this step: `make setup` and the wheel build (setup.py) both call it, so
`pip wheel .` from a clean clone carries the files without `make`. Needs node and npm, and the
npm registry the first time. The page loads the runtime from its own origin; nothing is fetched
from other origins at run time.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
PACKAGE = WEB / "node_modules" / "onnxruntime-web"
TARGET = WEB.parent / "src" / "face_emotion" / "server" / "static" / "vendor" / "onnxruntime-web"
# What the page loads (server/model_files.RUNTIME_FILES), and package.json for the version and licence.
FILES = ("dist/ort.wasm.min.js", "dist/ort-wasm-simd-threaded.mjs", "dist/ort-wasm-simd-threaded.wasm", "package.json")


def _installed_version() -> str | None:
    import json

    try:
        return json.loads((PACKAGE / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _locked_version() -> str:
    import json

    lock = json.loads((WEB / "package-lock.json").read_text())
    return lock["packages"]["node_modules/onnxruntime-web"]["version"]


def vendor() -> Path:
    if _installed_version() != _locked_version() or not all((PACKAGE / f).is_file() for f in FILES):
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("building face-emotion from source needs node and npm (for onnxruntime-web, "
                             "the page's in-browser runtime): install them, or install the published wheel")
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=WEB, check=True)
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(PACKAGE / name, TARGET / Path(name).name)
    # The wasm precompressed once here (14 MB -> under 4 MB), so no server spends seconds gzipping
    # it on a first visit; server/compression.py sends it to clients that accept gzip.
    wasm = TARGET / "ort-wasm-simd-threaded.wasm"
    (TARGET / f"{wasm.name}.gz").write_bytes(gzip.compress(wasm.read_bytes(), compresslevel=9, mtime=0))
    return TARGET


if __name__ == "__main__":
    print(f"onnxruntime-web {_locked_version()} -> {vendor()}", file=sys.stderr)
