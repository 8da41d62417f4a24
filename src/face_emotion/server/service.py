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

from face_emotion.inference.pipeline import analyse
from face_emotion.inference.results import ImageResult
from face_emotion.server.config import ServerConfig
from face_emotion.server.errors import ApiError
from face_emotion.version import __version__

log = logging.getLogger(__name__)


class DeadlineExceeded(ApiError):
    """A prediction did not finish within the request's deadline (ServerConfig.inference_timeout_s)."""

    def __init__(self, timeout_s: float):
        super().__init__(503, "timeout", f"the prediction did not finish within {timeout_s:g} s (the server is "
                                         f"busy or the image too demanding); try again later")


def load_predictor(config: ServerConfig):
    """The configured model and detector for this process, opened as every verb opens them
    (Predictor.load: ONNX Runtime unless the config names a backend, so no worker imports torch).

    inference_threads 0 leaves the backends' default (every CPU this process may use).
    Raises a FaceEmotionError (ModelLoadError, DetectorUnavailableError, ...) that says how to fix it.
    """
    from face_emotion.inference.predictor import Predictor

    return Predictor.load(config.model, detector=config.detector, backend=config.backend, tta=config.tta,
                          num_threads=config.inference_threads or None)


@dataclass
class Service:
    predictor: Any  # face_emotion.inference.predictor.Predictor, or anything with its interface
    config: ServerConfig
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        # Predictions in one worker are serialised: the model already uses every intra-op thread it
        # was given, so running two at once only makes both slower. Other threads keep reading
        # uploads meanwhile.
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
        """Image bytes -> the image's ImageResult through the one pipeline (inference.pipeline.analyse);
        a bad image is a failed result, as in the CLI and batch (the routes choose the HTTP status).

        ``deadline`` (time.monotonic()): DeadlineExceeded (503 "timeout") when the prediction is not
        done by then; None: inference_timeout_s from now.
        """
        if not data:
            return ImageResult.failed("no_image", "the uploaded image is empty", path=path)
        deadline = self.deadline() if deadline is None else deadline
        return self._run_before(deadline, analyse, self.predictor, data, path=path, explain=explain, detect=detect,
                                max_pixels=self.config.max_pixels)

    def warm_up(self) -> None:
        """One prediction on a blank image, so the first real request does not pay for lazy setup."""
        from PIL import Image

        image = Image.new("RGB", (64, 64), (128, 128, 128))
        try:
            with self._slots:
                self.predictor.predict(image, explain=False, detect=True)
        except Exception:  # a warm-up failure must not stop the service; requests will report it
            log.warning("warm-up prediction failed", exc_info=True)
