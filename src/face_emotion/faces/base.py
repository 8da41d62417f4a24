"""The face-detection contract: what a detector returns and what every detector looks like.

Boxes are ``(x, y, width, height)`` in pixels of the image that was passed in (EXIF-upright RGB),
so a caller never has to know at which resolution a detector really ran.

Eye names follow MediaPipe and dlib: ``left_eye`` is the subject's own left eye, which in an
upright, unmirrored photo appears on the image's *right*. Alignment only needs the eye line, and
this naming keeps its direction meaningful when a face is upside down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from face_emotion.errors import FaceEmotionError

Point = tuple[float, float]


class DetectorUnavailableError(FaceEmotionError, ImportError):
    """A detector's library or model file is missing; the message says what to install."""

    code = "detector_unavailable"


@dataclass(frozen=True)
class Face:
    """One detected face.

    box_xywh: left, top, width, height in pixels (ints), clipped to the image.
    score: detector confidence in [0, 1]; 1.0 where a detector has none.
    landmarks: name -> (x, y) in pixels (floats: alignment wants sub-pixel eyes), or None.
        Has at least ``left_eye`` and ``right_eye`` whenever the detector provides eyes.
    """

    box_xywh: tuple[int, int, int, int]
    score: float
    landmarks: Mapping[str, Point] | None = field(default=None, compare=True)

    def __post_init__(self) -> None:
        x, y, w, h = (int(v) for v in self.box_xywh)
        if w <= 0 or h <= 0:
            raise ValueError(f"face box must have positive width and height, got {self.box_xywh}")
        object.__setattr__(self, "box_xywh", (x, y, w, h))
        object.__setattr__(self, "score", float(self.score))
        if self.landmarks is not None:
            object.__setattr__(
                self, "landmarks", {str(k): (float(p[0]), float(p[1])) for k, p in self.landmarks.items()}
            )

    @property
    def area(self) -> int:
        return self.box_xywh[2] * self.box_xywh[3]

    @property
    def eyes(self) -> tuple[Point, Point] | None:
        """(left_eye, right_eye) when both are known, else None."""
        if self.landmarks and "left_eye" in self.landmarks and "right_eye" in self.landmarks:
            return self.landmarks["left_eye"], self.landmarks["right_eye"]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "box_xywh": list(self.box_xywh),
            "score": round(self.score, 4),
            "landmarks": None
            if self.landmarks is None
            else {name: [round(x, 1), round(y, 1)] for name, (x, y) in self.landmarks.items()},
        }


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in an RGB PIL image; returns them largest first."""

    name: str

    def detect(self, image: Image.Image) -> list[Face]: ...


# --------------------------------------------------------------------------- helpers for detectors


def sort_largest_first(faces: Iterable[Face]) -> list[Face]:
    # Largest first because the biggest face is almost always the subject a user cares about;
    # score breaks ties so the order is deterministic.
    return sorted(faces, key=lambda f: (-f.area, -f.score, f.box_xywh))


# Images whose longer side is below this are enlarged before detection. A face that fills a small
# image (a 48-pixel FER2013 crop, a thumbnail, a tight selfie crop) is too big for a detector's
# anchors relative to the frame and too small in pixels: on 60 FER2013 crops CenterFace found 42
# faces at 48 px and 57 after enlarging to 160.
MIN_DETECTION_SIDE = 160


def working_copy(image: Image.Image, max_side: int | None,
                 min_side: int = MIN_DETECTION_SIDE) -> tuple[Image.Image, float]:
    """The image a detector should run on, and the factor to multiply its coordinates back by.

    Detector cost grows with pixel count while faces bigger than a few dozen pixels gain nothing
    from more resolution, so photos above ``max_side`` are shrunk first; images below
    ``min_side`` are enlarged.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    longest = max(image.size)
    if min_side and longest < min_side:
        factor = min_side / longest
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        return image.resize(size, Image.Resampling.BILINEAR), 1.0 / factor
    if not max_side or longest <= max_side:
        return image, 1.0
    factor = max_side / longest
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    # reducing_gap makes PIL shrink by an integer factor first: several times faster on
    # 12-megapixel photos and indistinguishable for detection.
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), 1.0 / factor


def make_face(
    box_xyxy: Sequence[float],
    score: float,
    landmarks: Mapping[str, Point] | None,
    scale: float,
    image_size: tuple[int, int],
) -> Face | None:
    """A Face in original-image pixels from detector coordinates; None when nothing is left of it.

    Boxes are clipped to the image: a box hanging far outside would make crops mostly padding.
    """
    width, height = image_size
    x0, y0, x1, y1 = (float(v) * scale for v in box_xyxy)
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(width), x1), min(float(height), y1)
    ix0, iy0 = int(math.floor(x0 + 0.5)), int(math.floor(y0 + 0.5))
    w, h = int(math.floor(x1 + 0.5)) - ix0, int(math.floor(y1 + 0.5)) - iy0
    if w < 1 or h < 1:
        return None
    scaled = None if landmarks is None else {k: (p[0] * scale, p[1] * scale) for k, p in landmarks.items()}
    return Face((ix0, iy0, w, h), min(1.0, max(0.0, float(score))), scaled)


def iou_matrix(boxes_xyxy: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (boxes_xyxy[:, i] for i in range(4))
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    iw = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    ih = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    inter = iw * ih
    union = area[:, None] + area[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    if len(boxes_xyxy) == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    iou = iou_matrix(np.asarray(boxes_xyxy, dtype=np.float64))
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_threshold
    return keep
