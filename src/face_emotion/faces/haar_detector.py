"""OpenCV's Viola-Jones Haar cascades: the fallback that needs nothing but OpenCV 4.x.

Weaker than CenterFace (misses strongly turned faces, a few false positives on clothing and
textures) but its cascade files ship inside every opencv-python 4.x wheel. OpenCV 5 wheels ship
no cascades, hence the <5 pin.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from face_emotion.faces.base import DetectorUnavailableError, Face, make_face, nms, sort_largest_first, working_copy
from face_emotion.faces.registry import register_detector


def _cascade(cv2: Any, file_name: str) -> Any:
    root = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(root or "") / file_name
    if not root or not path.is_file():
        raise DetectorUnavailableError(
            f"OpenCV {cv2.__version__} ships no {file_name} (OpenCV 5 dropped the cascades): "
            "pip install 'opencv-python-headless>=4.10,<5'"
        )
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DetectorUnavailableError(f"OpenCV could not load {path}")
    return cascade


@register_detector("haar")
class HaarDetector:
    """Frontal-face cascade, plus the eye cascade inside each face for alignment landmarks.

    max_side: photos are shrunk to this longest side first; the cascade scans every scale, so its
        cost grows with pixel count (a 2376x1532 photo takes ~1 s at full size).
    min_neighbors: 6 rather than the customary 5: on the benchmark variants it removed every
        false positive (clothing, duplicate boxes) and lost no face (docs/face-detectors.md).
    profile: also run the profile cascade (on the image and its mirror); finds more turned faces
        at about four times the cost.
    detect() may be called from several threads (the scans take turns).
    """

    name = "haar"

    def __init__(
        self,
        max_side: int = 800,
        scale_factor: float = 1.1,
        min_neighbors: int = 6,
        min_face: int = 20,
        profile: bool = False,
        eyes: bool = True,
    ) -> None:
        try:
            import cv2
        except ImportError as error:
            raise DetectorUnavailableError(
                "the 'haar' face detector needs OpenCV: pip install 'opencv-python-headless>=4.10,<5'"
            ) from error
        self._cv2 = cv2
        self._frontal = _cascade(cv2, "haarcascade_frontalface_default.xml")
        self._profile = _cascade(cv2, "haarcascade_profileface.xml") if profile else None
        self._eye = _cascade(cv2, "haarcascade_eye.xml") if eyes else None
        self.max_side = int(max_side)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_face = int(min_face)
        # OpenCV does not promise that one CascadeClassifier may scan from two threads at once.
        self._lock = threading.Lock()

    def detect(self, image: Image.Image) -> list[Face]:
        small, scale = working_copy(image, self.max_side)
        with self._lock:
            return self._detect(small, scale, image.size)

    def _detect(self, small: Image.Image, scale: float, size: tuple[int, int]) -> list[Face]:
        cv2 = self._cv2
        # No histogram equalisation: on the benchmark it cost faces (rotated, small) and added
        # false positives on clothing.
        gray = cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY)
        boxes = [tuple(b) for b in self._scan(self._frontal, gray)]
        if self._profile is not None:
            boxes += [tuple(b) for b in self._scan(self._profile, gray)]
            # The profile cascade only knows faces looking one way; the mirror covers the other.
            width = gray.shape[1]
            boxes += [(width - x - w, y, w, h) for x, y, w, h in self._scan(self._profile, cv2.flip(gray, 1))]
        if not boxes:
            return []
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=np.float64)
        # No confidence from detectMultiScale: prefer the larger box when two overlap.
        areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
        faces = []
        for i in nms(xyxy, areas, 0.3):
            landmarks = self._eyes(gray, xyxy[i]) if self._eye is not None else None
            face = make_face(xyxy[i], 1.0, landmarks, scale, size)
            if face is not None:
                faces.append(face)
        return sort_largest_first(faces)

    def _scan(self, cascade: Any, gray: np.ndarray) -> Any:
        size = (self.min_face, self.min_face)
        return cascade.detectMultiScale(gray, self.scale_factor, self.min_neighbors, minSize=size)

    def _eyes(self, gray: np.ndarray, box: np.ndarray) -> dict[str, tuple[float, float]] | None:
        cv2 = self._cv2
        x0, y0, x1, y1 = (int(v) for v in box)
        w, h = x1 - x0, y1 - y0
        # Eyes sit in the upper half of a Haar face box; searching only there avoids nostrils
        # and mouth corners, the eye cascade's usual mistakes.
        roi = gray[y0 : y0 + h * 11 // 20, x0:x1]
        if roi.size == 0 or w < 8:
            return None
        # The eye cascade's window is 20x20 px, so eyes of faces under ~150 px wide are too small
        # for it. Enlarging the strip found eyes in 49 of 53 benchmark faces instead of 6, within
        # 7% of the face width of CenterFace's eyes.
        zoom = max(1.0, 160.0 / w)
        if zoom > 1.0:
            roi = cv2.resize(roi, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        zw = roi.shape[1]
        side = max(6, zw // 8)
        found = self._eye.detectMultiScale(roi, 1.1, 3, minSize=(side, side), maxSize=(zw // 2, zw // 2))
        best: dict[str, tuple[float, float, float]] = {}
        for ex, ey, ew, eh in found:
            cx, cy = (ex + ew / 2) / zoom, (ey + eh / 2) / zoom
            # Image-left half holds the subject's right eye (see base.py for the naming).
            name = "right_eye" if cx < w / 2 else "left_eye"
            distance = abs(cx - (0.3 if name == "right_eye" else 0.7) * w) + abs(cy - 0.38 * h)
            if name not in best or distance < best[name][2]:
                best[name] = (cx, cy, distance)
        if len(best) < 2:
            return None
        return {name: (x0 + cx, y0 + cy) for name, (cx, cy, _) in best.items()}
