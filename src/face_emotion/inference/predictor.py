"""The Predictor: one image -> a FacePrediction per face, largest face first.

    image -> faces (detector) -> crops (faces.crop_face, margin from the spec) -> the one eval
    transform -> ONE batch for all faces -> backend -> logits -> softmax(logits / T) -> results

Opened once (:meth:`Predictor.load`: one model resolver and backend policy,
inference.loading.open_backend; one detector factory, faces.create_detector), then used by every verb
through inference.pipeline.analyse. Everything a request needs is local to the call, so one
Predictor can serve many threads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from face_emotion.inference.backends import InferenceBackend, softmax
from face_emotion.inference.explain import occlusion_maps
from face_emotion.inference.loading import open_backend
from face_emotion.inference.results import Box, FacePrediction
from face_emotion.models.spec import ModelSpec
from face_emotion.transforms import eval_transform

if TYPE_CHECKING:
    from face_emotion.faces.crop import CropGeometry

# The detector name meaning "the image is a face crop already" (faces.whole_image): such an image
# is used whole, exactly as training and `evaluate` feed face crops, with no margin or alignment.
WHOLE_IMAGE = "none"


@dataclass(frozen=True)
class FaceCrop:
    """A face found in an image and the crop of it that the network sees."""

    box: Box
    score: float
    crop: Image.Image  # what the network sees, before the eval transform
    geometry: "CropGeometry"  # where the crop lies in the photo


def heatmap_png(cam: np.ndarray, geometry: "CropGeometry", box: Box) -> bytes:
    """An (h, w) map in [0, 1] over a crop -> 8-bit greyscale PNG laid over the face *box*.

    The map is resampled through the crop's own geometry (faces.crop.CropGeometry), so a rotated
    or landmark-fitted crop puts each hot spot on the photo pixel it came from.
    """
    import cv2

    side = geometry.side
    full = cv2.resize(cam.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    to_box = np.array(geometry.matrix, dtype=np.float64) - np.array([[0, 0, box.x], [0, 0, box.y]], dtype=np.float64)
    warped = cv2.warpAffine(full, to_box, (box.width, box.height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    pixels = np.clip(warped * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def make_detector(detector: Any = None, *, num_threads: int | None = None):
    """None -> the default detector; a name -> the registry (faces.create_detector, "none" among
    them); an object with ``detect(image)`` -> itself."""
    if detector is None or isinstance(detector, str):
        from face_emotion.faces import create_detector

        return create_detector(detector, num_threads=num_threads)
    if not callable(getattr(detector, "detect", None)):
        raise TypeError(f"a detector needs a detect(image) method; got {type(detector).__name__}")
    return detector


class Predictor:
    """Emotions of the faces in an image, with a model's own preprocessing.

    Build it with :meth:`load`. ``predict`` is safe to call from several threads. The
    constructor takes ready objects: a backend, and a detector object or None (None, like the
    "none" detector, means every image is a face crop already).
    """

    def __init__(self, backend: InferenceBackend, detector: Any = None, *, tta: bool = False) -> None:
        self.backend = backend
        self.spec: ModelSpec = backend.spec
        self.detector = detector
        self.tta = tta
        self.transform = eval_transform(self.spec.preprocess)

    @classmethod
    def load(
        cls,
        model: str | Path | None = None,
        *,
        detector: Any = None,
        backend: str | None = None,
        tta: bool = False,
        num_threads: int | None = None,
    ) -> "Predictor":
        """Open a model and a face detector: what every verb does first.

        ``model``: a run folder, a .safetensors or a .onnx file; None -> the bundled default model
        (ModelLoadError when this installation has none). ``detector``: None -> the default face
        detector, "none" -> images are face crops already, another registered name, or an object
        with ``detect(image) -> list[Face]``. ``backend``: None (ONNX Runtime) or a name of
        backends.backend_names(); see inference.loading.open_backend. ``tta``: also run each crop mirrored
        and average the two probability vectors. ``num_threads``: threads of the backend and the
        detector (None: the CPUs this process may use).
        """
        opened = open_backend(model, backend, num_threads=num_threads)
        return cls(opened, make_detector(detector, num_threads=num_threads), tta=tta)

    @property
    def whole_image(self) -> bool:
        """Every image is one face crop (no detector, or the "none" one)."""
        return self.detector is None or bool(getattr(self.detector, "whole_image", False))

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def detector_name(self) -> str:
        if self.whole_image:
            return WHOLE_IMAGE
        return str(getattr(self.detector, "name", type(self.detector).__name__))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def faces(self, image: Image.Image, *, detect: bool = True) -> list[FaceCrop]:
        """Faces of ``image``, largest first, each with the crop the network will see."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if not detect or self.whole_image:
            return [self.whole_crop(image)]
        return self.crops(image, self.detect(image))

    def detect(self, image: Image.Image, *, max_side: int | None = None) -> list[Any]:
        """The detector's faces (faces.Face) in ``image``, largest first, boxes in its pixels.

        ``max_side``: search a copy at most this many pixels across (video frames: a face that
        keeps a few dozen pixels there is still found, at a fraction of the cost).
        """
        from face_emotion.faces.base import make_face, working_copy

        small, scale = working_copy(image, max_side) if max_side else (image, 1.0)
        found = list(self.detector.detect(small))
        if scale != 1.0:
            moved = (make_face((x, y, x + w, y + h), f.score, f.landmarks, scale, image.size)
                     for f in found for x, y, w, h in [f.box_xywh])
            found = [f for f in moved if f is not None]
        # Detectors promise largest first; sorting again (stably) keeps that true for any plug-in.
        return sorted(found, key=lambda f: f.box_xywh[2] * f.box_xywh[3], reverse=True)

    def whole_crop(self, image: Image.Image) -> FaceCrop:
        """The whole image as the one face crop, taken as it is (no padding to a square): how
        training and `evaluate --no-detect` feed face crops, for images and video frames alike."""
        from face_emotion.faces.crop import CropGeometry

        width, height = image.size
        # Crop pixel (u, v) is photo pixel (u, v) scaled.
        side = max(width, height)
        whole = CropGeometry(side, ((width / side, 0.0, 0.0), (0.0, height / side, 0.0)))
        return FaceCrop(Box(0, 0, width, height), 1.0, image, whole)

    def crops(self, image: Image.Image, faces: Sequence[Any]) -> list[FaceCrop]:
        """Detected faces (faces.Face) -> the crops the network sees, geometry from the model file."""
        from face_emotion.faces.crop import crop_for_model

        out = []
        for face in faces:
            crop, geometry = crop_for_model(image, face, self.spec.preprocess)
            out.append(FaceCrop(Box(*(int(v) for v in face.box_xywh)), float(face.score), crop, geometry))
        return out

    def batch(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Crops -> the float32 (N, 3, S, S) batch the backend takes (the one eval transform)."""
        return np.stack([self.transform(crop) for crop in crops]).astype(np.float32, copy=False)

    def logits(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Face crops -> (N, classes) logits, before temperature: what scoring and predict share.

        With TTA the answer served is a mean of probabilities, which no single logit row gives;
        temperature x log(mean) is the row that softmax(row / temperature) turns back into exactly
        those probabilities, so scoring measures what users are served.
        """
        batch = np.ascontiguousarray(self.batch(crops))
        if not self.tta:
            return self.backend.run(batch)
        return self.spec.temperature * np.log(np.maximum(self.probabilities(batch), np.finfo(np.float32).tiny))

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, classes) probabilities of a :meth:`batch`: softmax(logits / spec.temperature);
        with TTA the mean over each crop and its mirror image, which ride in the same run."""
        count = len(batch)
        if self.tta:
            # Mirroring the normalised tensor equals normalising the mirrored crop (resize and
            # normalisation are symmetric), and saves a second transform pass.
            batch = np.concatenate([batch, batch[..., ::-1]])
        probs = softmax(self.backend.run(np.ascontiguousarray(batch)), self.spec.temperature)
        return (probs[:count] + probs[count:]) / 2.0 if self.tta else probs

    def predict(self, image: Image.Image, *, explain: bool = False, detect: bool = True) -> list[FacePrediction]:
        """One FacePrediction per face, largest face first; [] when no face is found.

        All faces go through the backend in one batch (with TTA, the mirrored crops ride in the
        same batch). Probabilities are softmax(logits / spec.temperature) over every class; with
        TTA they are the mean of the crop's and its mirror image's probabilities.

        ``explain``: add a heatmap per face for the predicted emotion (occlusion sensitivity on the
        same backend, inference.explain): an 8-bit greyscale PNG exactly the size of the face
        *box*, to be laid over the box (255 = most important), mapped back through the crop's
        geometry. ``detect=False``: the whole image is one face (box = the whole image).
        """
        faces = self.faces(image, detect=detect)
        if not faces:
            return []
        batch = self.batch([face.crop for face in faces])
        probs = self.probabilities(batch)
        heatmaps: list[bytes | None] = [None] * len(faces)
        if explain:
            cams = occlusion_maps(self.probabilities, batch, probs.argmax(axis=1))
            heatmaps = [heatmap_png(cam, face.geometry, face.box) for cam, face in zip(cams, faces)]
        return [FacePrediction.of(face.box, face.score, probs[i], self.classes, heatmaps[i])
                for i, face in enumerate(faces)]
