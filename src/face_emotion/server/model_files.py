"""The files the page needs to run the served model in the browser ("On this device").

    GET /model-files/manifest.json            what to load, and how to preprocess (no-cache)
    GET /model-files/<sha256[:16]>/<name>     the exact bytes the server runs (immutable)

The classifier is the ONNX file this worker's backend runs (the derived form of a .safetensors
model, or the .onnx file it was given, fp32 or int8); the detector is CenterFace as the server's
ONNX Runtime session runs it (centerface_detector.runnable_model). Each is named by its content
hash, so a browser cache never pairs an old model with new code, and may keep them for good.
The manifest carries everything the browser's preprocessing reads (the model's PreprocessSpec,
temperature and classes, the detector's settings, the face template), so no constant is typed
twice. :func:`site_files` gives the same files to `export --format web`.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, url_for

from face_emotion.errors import FaceEmotionError
from face_emotion.server.errors import ApiError

model_files = Blueprint("model_files", __name__)

MANIFEST_VERSION = 1
# The onnxruntime-web files the page loads, copied into static/ by `make setup` (see Makefile).
RUNTIME_DIR = Path(__file__).resolve().parent / "static" / "vendor" / "onnxruntime-web"
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
IMMUTABLE = "public, max-age=31536000, immutable"
# Cross-origin isolation lets ONNX Runtime Web use threads (SharedArrayBuffer); every resource
# the page loads comes from this origin, so requiring CORP costs nothing.
ISOLATION_HEADERS = {"Cross-Origin-Embedder-Policy": "require-corp", "Cross-Origin-Resource-Policy": "same-origin"}


class OnDeviceUnavailable(FaceEmotionError, RuntimeError):
    """The served model cannot run in the browser; the message says why."""

    code = "on_device_unavailable"


@dataclass(frozen=True)
class ModelFile:
    name: str  # the file name in URLs and in an exported site
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def url_part(self) -> str:
        return f"{self.digest[:16]}/{self.name}"


@dataclass(frozen=True)
class SiteFiles:
    """What the browser needs: the manifest (URLs relative to the manifest) and the files."""

    manifest: dict[str, Any]
    files: tuple[ModelFile, ...]


def classifier_onnx(predictor) -> Path:
    """The ONNX file that ``predictor``'s backend runs; a PyTorch-served .safetensors model gets its
    derived form (the file `serve` would run by default)."""
    from face_emotion.inference.onnx_cache import derive_onnx
    from face_emotion.models.files import ModelLoadError

    path = Path(getattr(predictor.backend, "path", "") or "")
    if path.suffix == ".onnx" and path.is_file():
        return path
    if path.suffix == ".safetensors" and path.is_file():
        try:
            return derive_onnx(path)
        except ModelLoadError as error:
            raise OnDeviceUnavailable(f"the model has no ONNX form for the browser: {error}") from None
    raise OnDeviceUnavailable(f"the served model ({path or 'in memory'}) has no file the browser could load")


def detector_settings(detector) -> tuple[dict[str, Any], ModelFile | None]:
    """The face detector's settings for the browser, and its model file (None: no detector)."""
    from face_emotion.faces.base import MIN_DETECTION_SIDE
    from face_emotion.faces.centerface_detector import (
        MIN_WORKING_SIDE,
        RELIABLE_FACE_PX,
        CenterFaceDetector,
        default_model_path,
    )

    if detector is None:
        return {"name": "none"}, None
    if not isinstance(detector, CenterFaceDetector):
        raise OnDeviceUnavailable(f"only the CenterFace detector runs in the browser, not {detector.name!r}")
    path = Path(getattr(detector, "model_path", None) or default_model_path())
    settings = {
        "name": "centerface", "threshold": detector.threshold, "max_side": detector.max_side,
        "min_face": detector.min_face, "nms_iou": detector.nms_iou, "reliable_face_px": RELIABLE_FACE_PX,
        "min_working_side": MIN_WORKING_SIDE, "min_detection_side": MIN_DETECTION_SIDE,
    }
    return settings, ModelFile("centerface.onnx", _runnable_detector(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _runnable_detector(path: str, mtime_ns: int) -> bytes:
    """The detector's graph as ONNX Runtime runs it (onnx import and rewrite: once per file)."""
    from face_emotion.faces.centerface_detector import runnable_model

    return runnable_model(Path(path).read_bytes())


def site_files(predictor, *, tta: bool = False) -> SiteFiles:
    """The manifest and files of ``predictor`` (a loaded Predictor) for the browser."""
    return build_site_files(predictor.spec, classifier_onnx(predictor), predictor.detector,
                            quantization=_quantization(predictor.backend), tta=tta)


def build_site_files(spec, onnx_path: Path, detector, *, quantization: str = "none", tta: bool = False) -> SiteFiles:
    """The manifest and files for a model (its ModelSpec and the ONNX file that computes it) and a
    face detector object (None: every image is one face)."""
    from face_emotion.faces.crop import FACE_TEMPLATE

    classifier = ModelFile("model.onnx", Path(onnx_path).read_bytes())
    detector_info, detector_file = detector_settings(detector)
    files = [classifier] + ([detector_file] if detector_file else [])
    if detector_file:
        detector_info["file"] = detector_file.url_part
        detector_info["sha256"] = detector_file.digest
    manifest = {
        "version": MANIFEST_VERSION,
        "model": {
            "file": classifier.url_part, "sha256": classifier.digest, "bytes": len(classifier.data),
            "quantization": quantization,
            # What preprocessing and reading the output need; not the training record.
            "spec": {"name": spec.name, "version": spec.version, "architecture": spec.architecture,
                     "classes": list(spec.classes), "temperature": spec.temperature,
                     "preprocess": spec.to_dict()["preprocess"]},
        },
        "detector": detector_info,
        "face_template": {name: list(point) for name, point in FACE_TEMPLATE.items()},
        "tta": bool(tta),
    }
    return SiteFiles(manifest, tuple(files))


def _quantization(backend) -> str:
    return str(getattr(backend, "quantization", "none"))


def _service():
    return current_app.extensions["face_emotion"]


class _Cache:
    """One SiteFiles per app (worker): built on the first request, then served from memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: SiteFiles | None = None
        self.error: str | None = None

    def get(self) -> SiteFiles:
        with self.lock:
            if self.value is None and self.error is None:
                service = _service()
                try:
                    self.value = site_files(service.predictor, tta=bool(service.config.tta))
                except OnDeviceUnavailable as error:
                    self.error = str(error)
            if self.error is not None:
                raise ApiError(404, "on_device_unavailable", f"this model cannot run in the browser: {self.error}")
            return self.value


def _cache() -> _Cache:
    return current_app.extensions.setdefault("face_emotion_model_files", _Cache())


@model_files.get("/model-files/manifest.json")
def manifest():
    site = _cache().get()
    response = jsonify({**site.manifest, "base": "/model-files/", "runtime": "/static/vendor/onnxruntime-web/",
                        "runtime_ready": all((RUNTIME_DIR / name).is_file() for name in RUNTIME_FILES)})
    # Names the current files: always asked again, so a new model is picked up at once.
    response.headers["Cache-Control"] = "no-cache"
    return response


@model_files.get("/model-files/<digest>/<name>")
def model_file(digest: str, name: str):
    site = _cache().get()
    for file in site.files:
        if file.name == name and file.digest.startswith(digest) and len(digest) == 16:
            response = Response(file.data, mimetype="application/octet-stream")
            response.headers["Cache-Control"] = IMMUTABLE
            response.headers["ETag"] = f'"{file.digest}"'
            return response
    raise ApiError(404, "not_found", f"no model file {digest}/{name} here: the server now runs another model; "
                                     f"reload the page")


@model_files.app_context_processor
def _page_context() -> dict[str, Any]:
    return {"manifest_url": url_for("model_files.manifest"), "static_site": False}


@model_files.after_app_request
def _isolation(response):
    for key, value in ISOLATION_HEADERS.items():
        response.headers.setdefault(key, value)
    return response
