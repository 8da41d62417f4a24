"""The one object the routes talk to: a loaded Predictor plus the limits that guard it.

Routes deal with HTTP (reading uploads, status codes); this module turns image bytes into an
ImageResult (inference/results.py), whose `to_dict()` is the one JSON shape of an image's result.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from face_emotion import __version__
from face_emotion.imageio import ImageDecodeError, ImageTooLargeError, decode_image
from face_emotion.inference.backends import ExplainUnavailableError
from face_emotion.inference.results import ImageResult
from face_emotion.server.config import ServerConfig
from face_emotion.server.errors import ApiError

log = logging.getLogger(__name__)


class DeadlineExceeded(ApiError):
    """A prediction did not finish within the request's deadline (ServerConfig.inference_timeout_s)."""

    def __init__(self, timeout_s: float):
        super().__init__(503, "timeout", f"the prediction did not finish within {timeout_s:g} s (the server is "
                                         f"busy or the image too demanding); try again later")


def load_predictor(config: ServerConfig):
    """Load the model named by the config (the bundled default when None) for this process.

    Without an explicit backend a .safetensors model is served by ONNX Runtime through its derived
    ONNX form (backends.derive_onnx): the same weights and answers, without torch in the worker
    (1.25 GB -> ~0.2 GB resident per worker) and faster. torch is imported only if an explanation
    (Grad-CAM) is asked for. If the model cannot be exported, PyTorch serves it.
    Raises face_emotion.models.store.ModelLoadError with a message that says how to fix it.
    """
    from face_emotion.inference.backends import open_backend
    from face_emotion.inference.predictor import Predictor
    from face_emotion.models.bundled import resolve_model_argument
    from face_emotion.models.store import ModelLoadError

    # inference_threads 0: the backend's default (every CPU this process may use).
    threads = config.inference_threads or None
    path = resolve_model_argument(config.model)
    if config.backend is None:
        try:
            backend = open_backend(path, num_threads=threads, derive=True)
        except ModelLoadError as error:
            log.warning("serving %s with PyTorch: %s", path, error)
            backend = open_backend(path, num_threads=threads)
    else:
        backend = open_backend(path, prefer=config.backend, num_threads=threads)
    return Predictor(backend, _detector(config.detector, threads), tta=config.tta)


def _detector(name: str | None, threads: int | None):
    """The configured face detector; CenterFace's own ONNX Runtime pool gets the worker's share of
    the cores too (its default, every core in every worker, oversubscribes them)."""
    from face_emotion.faces import DEFAULT_DETECTOR, create_detector
    from face_emotion.inference.predictor import WHOLE_IMAGE

    if name == WHOLE_IMAGE:
        return None
    if (name or DEFAULT_DETECTOR) == "centerface":
        return create_detector("centerface", num_threads=threads)
    return create_detector(name)


@dataclass
class Service:
    predictor: Any  # face_emotion.inference.predictor.Predictor, or anything with its interface
    config: ServerConfig
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        # Predictions in one worker are serialised: the model already uses every intra-op thread it
        # was given, so running two at once only makes both slower, and Grad-CAM hooks are not
        # meant to be shared between threads. Other threads keep reading uploads meanwhile.
        self._slots = threading.BoundedSemaphore(self.config.inference_concurrency)
        # Predictions run on these threads so that the request thread can stop waiting at the
        # deadline and answer in JSON; gunicorn's own timeout would kill the worker without a word.
        self._runner = ThreadPoolExecutor(max_workers=self.config.inference_concurrency,
                                          thread_name_prefix="face-emotion-inference")

    # ---- descriptions ---------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(self.predictor.spec.name)

    def model_info(self) -> dict[str, Any]:
        spec = self.predictor.spec
        return {
            "name": spec.name,
            "version": spec.version,
            "architecture": spec.architecture,
            "classes": list(spec.classes),
            "image_size": int(spec.preprocess.image_size),
            "color_mode": spec.preprocess.color_mode,
            "metrics": dict(spec.metrics or {}),
            "backend": getattr(self.predictor, "backend_name", None),
            "detector": getattr(self.predictor, "detector_name", None),
        }

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.model_name,
            "backend": getattr(self.predictor, "backend_name", None),
            "detector": getattr(self.predictor, "detector_name", None),
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }

    # ---- predictions ----------------------------------------------------------------------
    def decode(self, data: bytes):
        if not data:
            raise ApiError(400, "no_image", "the uploaded image is empty")
        try:
            return decode_image(data, max_pixels=self.config.max_pixels)
        except ImageTooLargeError as error:
            raise ApiError(413, error.code, str(error)) from None
        except ImageDecodeError as error:
            raise ApiError(400, error.code, str(error)) from None

    def deadline(self) -> float:
        """The time.monotonic() by which a request starting now must have its predictions."""
        return time.monotonic() + float(self.config.inference_timeout_s)

    def _run_before(self, deadline: float, function, *args, **kwargs):
        """function(*args, **kwargs) on an inference thread, or DeadlineExceeded at the deadline."""
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeadlineExceeded(self.config.inference_timeout_s)

        def job():
            try:
                return function(*args, **kwargs)
            finally:
                self._slots.release()

        try:
            future = self._runner.submit(job)
        except BaseException:
            self._slots.release()
            raise
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            # A thread cannot be stopped: the prediction runs on and keeps its slot until it ends,
            # so later requests wait for it (or time out) instead of piling more work on the worker.
            log.warning("a prediction is still running after the %g s deadline", self.config.inference_timeout_s)
            raise DeadlineExceeded(self.config.inference_timeout_s) from None

    def predict_bytes(self, data: bytes, *, explain: bool = False, detect: bool = True,
                      deadline: float | None = None, path: str | None = None) -> ImageResult:
        """Image bytes -> the image's ImageResult (``path``: a name for it). Raises ApiError for bad input.

        ``deadline`` (time.monotonic()): DeadlineExceeded (503 "timeout") when the prediction is not
        done by then; None: inference_timeout_s from now.
        """
        deadline = self.deadline() if deadline is None else deadline
        image = self.decode(data)
        try:
            faces = self._run_before(deadline, self.predictor.predict, image, explain=explain, detect=detect)
        except ExplainUnavailableError as error:
            raise ApiError(400, "explain_unavailable", f"explain=1 is not available for this model: {error}") from None
        return ImageResult.of(image, faces, path=path)

    def warm_up(self) -> None:
        """One prediction on a blank image, so the first real request does not pay for lazy setup."""
        from PIL import Image

        image = Image.new("RGB", (64, 64), (128, 128, 128))
        try:
            with self._slots:
                self.predictor.predict(image, explain=False, detect=True)
        except Exception:  # a warm-up failure must not stop the service; requests will report it
            log.warning("warm-up prediction failed", exc_info=True)
