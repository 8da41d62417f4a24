"""The files the page needs to run the served model in the browser ("On this device").

    GET /model-files/manifest.json                   what to load, and how to preprocess (no-cache)
    GET /model-files/<sha256[:16]>/<name>            a model file, named by its content (immutable)
    GET /model-files/runtime/<sha256[:16]>/<name>    onnxruntime-web's files, likewise

The classifier is the ONNX file this worker's backend runs (the derived form of a .safetensors
model, or the .onnx file it was given, fp32 or int8); the detector is CenterFace as the server's
ONNX Runtime session runs it (centerface_detector.runnable_model). The page loads lighter forms
of both by default (inference/compact_onnx.py: the same graphs, weights stored in fewer bytes),
and the exact bytes the server runs with ``?weights=exact``; the manifest names both. Each file
is named by its content hash, so a browser cache never pairs an old model with new code, and may
keep them for good; every file goes out gzipped to a client that takes it (server/compression.py).
The manifest carries everything the browser's preprocessing reads (the model's PreprocessSpec,
temperature and classes, the detector's settings, the face template), so no constant is typed
twice. :func:`site_files` gives the same files to `export --format web`.

Why lighter files by default: the first visit downloads them before its first answer (the fp32
pair is 21 MB, the light pair 8). Against the fp32 pair on 103 faces in real photos, the light pair
gives the same top-1 answer for all but one, a near-tie (its top two 0.0065 apart), and for 99.8 %
of 2000 face crops; probabilities move by up to about 0.04, no more than the fp16 detector's boxes
and landmarks (up to 1 px off) move them through the crop (benchmarks/light_models.py; figures and
the reasoning in docs/first-visit.md).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, url_for

from face_emotion.errors import FaceEmotionError
from face_emotion.server.compression import Encoded, encode, encoded_file, mimetype_of, respond
from face_emotion.server.errors import ApiError

model_files = Blueprint("model_files", __name__)

MANIFEST_VERSION = 2
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
    weights: str = "as served"  # how its weights are stored: "as served", "fp16", "int8>=N, fp16"

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def url_part(self) -> str:
        return f"{self.digest[:16]}/{self.name}"

    def entry(self) -> dict[str, Any]:
        return {"file": self.url_part, "sha256": self.digest, "bytes": len(self.data), "weights": self.weights}


@dataclass(frozen=True)
class SiteFiles:
    """What the browser needs: the manifest (URLs relative to the manifest) and the files."""

    manifest: dict[str, Any]
    files: tuple[ModelFile, ...]
    _encoded: dict[str, Encoded] = field(default_factory=dict, compare=False, repr=False)

    def encoded(self, file: ModelFile) -> Encoded:
        """``file``'s hash and gzip form, made on its first request (callers hold the cache's lock)."""
        if file.url_part not in self._encoded:
            self._encoded[file.url_part] = encode(file.data, "application/octet-stream")
        return self._encoded[file.url_part]


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


def detector_settings(detector) -> tuple[dict[str, Any], tuple[ModelFile, ModelFile] | None]:
    """The face detector's settings for the browser, and its model files, exact and light (None:
    no detector)."""
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
    exact, light = _detector_files(str(path), path.stat().st_mtime_ns)
    return settings, (ModelFile("centerface.onnx", exact), ModelFile("centerface.fp16.onnx", light, "fp16"))


@functools.lru_cache(maxsize=4)
def _detector_files(path: str, mtime_ns: int) -> tuple[bytes, bytes]:
    """The detector's graph as ONNX Runtime runs it, and its fp16 form (made once per file): its
    boxes stay within a pixel of the fp32 ones, where int8 weights moved them by up to 9 px on
    real photos."""
    from face_emotion.faces.centerface_detector import runnable_model
    from face_emotion.inference.compact_onnx import compact_onnx

    runnable = runnable_model(Path(path).read_bytes())
    return runnable, compact_onnx(runnable)


def light_classifier(data: bytes, quantization: str) -> ModelFile:
    """The classifier the page loads by default: an fp32 model's weights stored as int8 (the large
    tensors) and fp16 (the rest); a model quantized already goes as it is."""
    from face_emotion.inference.compact_onnx import BROWSER_INT8_MIN_ELEMENTS, compact_onnx

    if quantization != "none":
        return ModelFile("model.onnx", data)
    light = compact_onnx(data, int8_min_elements=BROWSER_INT8_MIN_ELEMENTS)
    return ModelFile("model.light.onnx", light, f"int8>={BROWSER_INT8_MIN_ELEMENTS}, fp16")


def site_files(predictor, *, tta: bool = False) -> SiteFiles:
    """The manifest and files of ``predictor`` (a loaded Predictor) for the browser."""
    return build_site_files(predictor.spec, classifier_onnx(predictor), predictor.detector,
                            quantization=_quantization(predictor.backend), tta=tta)


def build_site_files(spec, onnx_path: Path, detector, *, quantization: str = "none", tta: bool = False) -> SiteFiles:
    """The manifest and files for a model (its ModelSpec and the ONNX file that computes it) and a
    face detector object (None: every image is one face).

    Each of the model and the detector has an entry for the file the page loads by default (the
    light one) and, under "exact", the bytes the server runs."""
    from face_emotion.faces.crop import FACE_TEMPLATE

    classifier = ModelFile("model.onnx", Path(onnx_path).read_bytes())
    light = light_classifier(classifier.data, quantization)
    detector_info, detector_files = detector_settings(detector)
    files = [classifier] if light == classifier else [classifier, light]
    if detector_files:
        files += detector_files
        detector_info.update(detector_files[1].entry(), exact=detector_files[0].entry())
    manifest = {
        "version": MANIFEST_VERSION,
        "model": {
            **light.entry(), "exact": classifier.entry(), "quantization": quantization,
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


def runtime_digest() -> str | None:
    """One hash over onnxruntime-web's files (None: some are missing): their URL part, so a browser
    may keep them for good and still gets new ones with a new version."""
    paths = [RUNTIME_DIR / name for name in RUNTIME_FILES]
    if not all(path.is_file() for path in paths):
        return None
    return _runtime_digest(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))


@functools.lru_cache(maxsize=4)
def _runtime_digest(stamps: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamps:
        digest.update(Path(path).name.encode() + b"\0" + hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


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

    def encoded(self, file: ModelFile) -> Encoded:
        with self.lock:
            return self.value.encoded(file)


def _cache() -> _Cache:
    return current_app.extensions.setdefault("face_emotion_model_files", _Cache())


@model_files.get("/model-files/manifest.json")
def manifest():
    site = _cache().get()
    digest = runtime_digest()
    runtime = f"/model-files/runtime/{digest[:16]}/" if digest else "/static/vendor/onnxruntime-web/"
    response = jsonify({**site.manifest, "base": "/model-files/", "runtime": runtime, "runtime_ready": bool(digest)})
    # Names the current files: always asked again, so a new model is picked up at once.
    response.headers["Cache-Control"] = "no-cache"
    return response


@model_files.get("/model-files/<digest>/<name>")
def model_file(digest: str, name: str):
    cache = _cache()
    site = cache.get()
    for file in site.files:
        if file.name == name and file.digest.startswith(digest) and len(digest) == 16:
            return respond(cache.encoded(file), "application/octet-stream", body=file.data, cache_control=IMMUTABLE)
    raise ApiError(404, "not_found", f"no model file {digest}/{name} here: the server now runs another model; "
                                     f"reload the page")


@model_files.get("/model-files/runtime/<digest>/<name>")
def runtime_file(digest: str, name: str) -> Response:
    current = runtime_digest()
    if current is None or name not in RUNTIME_FILES or len(digest) != 16 or not current.startswith(digest):
        raise ApiError(404, "not_found", f"no runtime file {digest}/{name} here: the server now has another "
                                         f"onnxruntime-web; reload the page")
    path = RUNTIME_DIR / name
    mimetype = mimetype_of(name)
    return respond(encoded_file(path, mimetype), mimetype, body=path, cache_control=IMMUTABLE)


@model_files.app_context_processor
def _page_context() -> dict[str, Any]:
    return {"manifest_url": url_for("model_files.manifest"), "static_site": False}


@model_files.after_app_request
def _isolation(response):
    for key, value in ISOLATION_HEADERS.items():
        response.headers.setdefault(key, value)
    return response
