"""The one way from an input to an answer, for every verb: ``analyse(predictor, source) -> ImageResult``.

    source (bytes | path | PIL image | RGB array) -> decoded image (imageio) -> Predictor.predict
    -> ImageResult (or ImageResult.failed with the error's code)

`predict` (CLI), `batch` (local and Ray rows), the web API (/predict, /predict/batch) and the
Python API (face_emotion.FaceEmotion) all call :func:`analyse`; none of them catches its own
tuple of exceptions. A bad input never raises: it becomes a failed result with a stable code
(invalid_image, image_too_large, unreadable_file, ...); an unexpected failure inside the model
becomes ``prediction_failed`` (logged with its traceback), which the server answers as a 500.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from face_emotion.errors import FaceEmotionError, UnreadableFileError
from face_emotion.imageio import DEFAULT_MAX_PIXELS, decode_image, load_image
from face_emotion.inference.results import ImageResult

log = logging.getLogger(__name__)

Source = Union[bytes, bytearray, memoryview, str, Path, Image.Image, np.ndarray]
PREDICTION_FAILED = "prediction_failed"


def decode(source: Source, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Any accepted source -> an EXIF-upright 8-bit RGB image; FaceEmotionError when it cannot be had.

    A PIL image or an (H, W, 3) uint8 RGB array (a decoded video frame) is taken as it is: it is
    already upright, and its size was the caller's to bound.
    """
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise FaceEmotionError(f"an image array must be (height, width, 3) uint8 RGB, not {source.shape} "
                                   f"{source.dtype}", code="invalid_image")
        return Image.fromarray(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), max_pixels=max_pixels)
    try:
        return load_image(source, max_pixels=max_pixels)
    except OSError as error:  # permissions, vanished, a folder, a special file
        raise UnreadableFileError.of(error) from None


def analyse_keeping_image(predictor: Any, source: Source, *, path: str | None = None, explain: bool = False,
                          detect: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS
                          ) -> tuple[ImageResult, Image.Image | None]:
    """:func:`analyse`, and the decoded image (None when it could not be had), for drawing on it."""
    if path is None and isinstance(source, (str, Path)):
        path = str(source)
    start = time.perf_counter()
    model = _model_name(predictor)

    def elapsed_ms() -> float:
        return round((time.perf_counter() - start) * 1000.0, 1)

    try:
        image = decode(source, max_pixels=max_pixels)
        faces = predictor.predict(image, explain=explain, detect=detect)
    except FaceEmotionError as error:
        return ImageResult.failed(error.code, error.message, path=path, model=model, elapsed_ms=elapsed_ms()), None
    except Exception as error:  # noqa: BLE001 - one image must not end a run or a request
        log.exception("prediction failed on %s", path or "an image")
        return ImageResult.failed(PREDICTION_FAILED, f"prediction failed: {error.__class__.__name__}: {error}",
                                  path=path, model=model, elapsed_ms=elapsed_ms()), None
    return ImageResult.of(image, faces, path=path, model=model, elapsed_ms=elapsed_ms()), image


def _model_name(predictor: Any) -> str | None:
    spec = getattr(predictor, "spec", None)
    return None if spec is None else str(spec.name)


def analyse(predictor: Any, source: Source, *, path: str | None = None, explain: bool = False,
            detect: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageResult:
    """One image (bytes, a file path, a PIL image or an RGB array) -> its ImageResult; never raises
    for a bad input. ``path``: the name the result carries (a file path's own by default);
    ``explain``: heatmaps per face; ``detect=False``: the image is one face crop;
    ``max_pixels``: decompression-bomb guard for encoded inputs."""
    return analyse_keeping_image(predictor, source, path=path, explain=explain, detect=detect,
                                 max_pixels=max_pixels)[0]
