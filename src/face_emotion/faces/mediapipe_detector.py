"""MediaPipe BlazeFace (``mp.solutions.face_detection``, mediapipe 0.10.21): the fastest option.

Optional, not the default: mediapipe 0.10.21 pins numpy<2 and protobuf<5 for the whole
environment and pulls jax, jaxlib, matplotlib and opencv-contrib-python (mediapipe 1.x ships no
model files at all). BlazeFace sees the photo at 192x192, so faces under ~5% of the photo's side
vanish; overlapping tiles bring them back at a few milliseconds per tile.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
from PIL import Image

from face_emotion.faces.base import DetectorUnavailableError, Face, make_face, nms, sort_largest_first, working_copy
from face_emotion.faces.registry import register_detector

# mp.solutions keypoint order; MediaPipe already names eyes from the subject's point of view.
_LANDMARKS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


def _tile_origins(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile, stride))
    return origins + [length - tile]


@register_detector("mediapipe")
class MediaPipeDetector:
    """BlazeFace full range (model_selection=1) by default; 0 is the short-range selfie model.

    tile_min: the smallest tile side in working pixels. Tiles halve from the whole photo down to
        this; each overlaps its neighbour by a quarter so a face small enough to need a tile lies
        whole inside one. 0 disables tiling.
    tile_min_confidence: tiles give clothing and hands many more chances to look like a face, so
        a tile's detections must clear a higher bar (0.75 removed the benchmark's one tile false
        positive, at 0.64, and kept every tiled face).
    """

    name = "mediapipe"

    def __init__(
        self,
        model_selection: int = 1,
        min_confidence: float = 0.5,
        max_side: int = 1280,
        tile_min: int = 256,
        tile_min_confidence: float = 0.75,
        nms_iou: float = 0.3,
    ) -> None:
        try:
            import mediapipe as mp
            from mediapipe.python.solutions import face_detection
        except ImportError as error:
            raise DetectorUnavailableError(
                "the 'mediapipe' face detector needs mediapipe 0.10.21 (which pins numpy<2): "
                "pip install mediapipe==0.10.21, or choose the default 'centerface'"
            ) from error
        self._solution = face_detection.FaceDetection(
            model_selection=int(model_selection), min_detection_confidence=float(min_confidence)
        )
        self.version = mp.__version__
        self.max_side = int(max_side)
        self.tile_min = int(tile_min)
        self.tile_min_confidence = float(tile_min_confidence)
        self.nms_iou = float(nms_iou)
        # A mediapipe solution is one graph with one input stream: calls must take turns.
        self._lock = threading.Lock()

    def close(self) -> None:
        self._solution.close()

    def _run(self, array: np.ndarray) -> list[tuple[list[float], float, dict[str, tuple[float, float]]]]:
        height, width = array.shape[:2]
        with self._lock:
            result = self._solution.process(np.ascontiguousarray(array))
        found = []
        for detection in result.detections or []:
            data: Any = detection.location_data
            box = data.relative_bounding_box
            x0, y0 = box.xmin * width, box.ymin * height
            xyxy = [x0, y0, x0 + box.width * width, y0 + box.height * height]
            points = {
                name: (p.x * width, p.y * height) for name, p in zip(_LANDMARKS, data.relative_keypoints, strict=False)
            }
            found.append((xyxy, float(detection.score[0]), points))
        return found

    def detect(self, image: Image.Image) -> list[Face]:
        small, scale = working_copy(image, self.max_side)
        array = np.asarray(small)
        height, width = array.shape[:2]
        candidates = self._run(array)
        tile = max(height, width) // 2
        while self.tile_min and tile >= self.tile_min:
            stride = tile * 3 // 4
            margin = 2.0
            for ty, tx in itertools.product(_tile_origins(height, tile, stride), _tile_origins(width, tile, stride)):
                th, tw = min(tile, height - ty), min(tile, width - tx)
                for (x0, y0, x1, y1), score, points in self._run(array[ty : ty + th, tx : tx + tw]):
                    if score < self.tile_min_confidence:
                        continue
                    # A box touching an inner tile edge is a cut-off face; the overlapping
                    # neighbour tile (or the coarser pass) has it whole.
                    if (x0 < margin and tx > 0) or (y0 < margin and ty > 0) or \
                       (x1 > tw - margin and tx + tw < width) or (y1 > th - margin and ty + th < height):
                        continue
                    shifted = {k: (px + tx, py + ty) for k, (px, py) in points.items()}
                    candidates.append(([x0 + tx, y0 + ty, x1 + tx, y1 + ty], score, shifted))
            tile //= 2
        if not candidates:
            return []
        boxes = np.array([c[0] for c in candidates], dtype=np.float64)
        scores = np.array([c[1] for c in candidates])
        faces = []
        for i in nms(boxes, scores, self.nms_iou):
            face = make_face(boxes[i], scores[i], candidates[i][2], scale, image.size)
            if face is not None:
                faces.append(face)
        return sort_largest_first(faces)
