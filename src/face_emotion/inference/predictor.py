"""The Predictor: one image -> a FacePrediction per face, largest face first.

    image -> faces (detector) -> crops (faces.crop_face, margin from the spec) -> the one eval
    transform -> ONE batch for all faces -> backend -> logits -> softmax(logits / T) -> results

Everything a request needs is local to the call, so one Predictor can serve many threads; only
Grad-CAM (which hooks the network) takes a lock.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from face_emotion.inference.backends import InferenceBackend, open_backend
from face_emotion.inference.results import Box, FacePrediction
from face_emotion.models.bundled import resolve_model_argument
from face_emotion.models.spec import ModelSpec
from face_emotion.transforms import eval_transform

if TYPE_CHECKING:
    import torch

    from face_emotion.faces.crop import CropGeometry
    from torch import nn

# The detector name meaning "the image is a face crop already". It is handled here rather than
# by cropping a whole-image box with a margin: pre-cropped images are used whole, exactly as
# training and `evaluate --no-detect` feed them, and --no-detect then works without the
# face-detector package's dependencies.
WHOLE_IMAGE = "none"

# architecture -> the module whose output Grad-CAM weighs. Kept here, not in the backbone
# registry, because only explanations care. The last feature map before pooling is too coarse
# for small face crops: at 64-96 px EfficientNet-Lite0's head sees 2x2 or 3x3 cells, so every map
# lit the same corner (maps of different faces correlated at 1.00). The end of its stride-16
# stage (`_blocks.10`, 112 channels, 5x5 at 80 px) is still semantic and fine enough to separate
# eyes, nose and mouth: on the bundled model, maps of different faces correlated at 0.44 there
# against 0.97 at the head, and smiles lit the lower face.
CAM_TARGET_LAYERS = {
    "resnet18": "layer4",
    "resnet50": "layer4",
    "efficientnet_lite0": "_blocks.10",
}


@dataclass(frozen=True)
class FaceCrop:
    """A face found in an image and the crop of it that the network sees."""

    box: Box
    score: float
    crop: Image.Image  # what the network sees, before the eval transform
    geometry: "CropGeometry"  # where the crop lies in the photo


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, in float64 so rows sum to 1 to ~1e-15."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


class GradCam:
    """Grad-CAM (Selvaraju et al. 2017) on one layer of a PyTorch network.

    Written here rather than taken from the `grad-cam` package: that package pulls in
    scikit-learn, scipy, ttach and an unpinned OpenCV for these few lines, and its CAM objects
    keep hooks and activations on the model between calls, which does not fit a threaded server.
    Gradients are taken with torch.autograd.grad, so no `.grad` is left on the weights.
    """

    def __init__(self, network: "nn.Module", layer_name: str) -> None:
        self.network = network
        self.layer = network.get_submodule(layer_name)
        # The forward hook lives on the shared network: one explanation at a time, and the hook
        # ignores forward passes of other threads (plain inference keeps running meanwhile).
        self._lock = threading.Lock()

    def __call__(self, batch: "torch.Tensor", class_index: Sequence[int]) -> np.ndarray:
        """(N, h, w) maps in [0, 1] at the layer's resolution; row i explains class_index[i]."""
        import torch

        owner = threading.get_ident()
        captured: list[torch.Tensor] = []

        def keep_activation(module, inputs, output):
            if threading.get_ident() == owner:
                captured.append(output)

        with self._lock, torch.inference_mode(False), torch.enable_grad():
            handle = self.layer.register_forward_hook(keep_activation)
            try:
                # requires_grad on the input builds the graph even if the weights are frozen.
                inputs = batch.detach().clone().requires_grad_(True)
                logits = self.network(inputs)
            finally:
                handle.remove()
            activations = captured[-1]
            rows = torch.arange(len(class_index))
            # Eval-mode layers treat samples independently, so the gradient of the sum is each
            # sample's own gradient.
            score = logits[rows, torch.as_tensor(list(class_index))].sum()
            (gradients,) = torch.autograd.grad(score, activations)
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * activations.detach()).sum(dim=1)).numpy().astype(np.float64)
        low = cam.min(axis=(1, 2), keepdims=True)
        span = cam.max(axis=(1, 2), keepdims=True) - low
        return np.where(span > 0, (cam - low) / np.where(span > 0, span, 1.0), 0.0)


def heatmap_png(cam: np.ndarray, geometry: "CropGeometry", box: Box) -> bytes:
    """An (h, w) map in [0, 1] over a crop -> 8-bit greyscale PNG laid over the face *box*.

    The map is resampled through the crop's own geometry (faces.crop.CropGeometry), so a rotated
    or landmark-fitted crop puts each hot spot on the photo pixel it came from.
    """
    import cv2

    side = geometry.side
    full = cv2.resize(cam.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    to_box = np.array(geometry.matrix, dtype=np.float64) - np.array([[0, 0, box.x], [0, 0, box.y]], dtype=np.float64)
    warped = cv2.warpAffine(full, to_box, (box.width, box.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    pixels = np.clip(warped * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _make_detector(detector: Any):
    """None -> the default detector; "none" -> whole image; another name -> the registry; an object -> itself."""
    if isinstance(detector, str) and detector == WHOLE_IMAGE:
        return None
    if detector is None or isinstance(detector, str):
        from face_emotion.faces import create_detector

        return create_detector() if detector is None else create_detector(detector)
    if not callable(getattr(detector, "detect", None)):
        raise TypeError(f"a detector needs a detect(image) method; got {type(detector).__name__}")
    return detector


class Predictor:
    """Emotions of the faces in an image, with a model's own preprocessing.

    Build it with :meth:`load`. ``predict`` is safe to call from several threads. The
    constructor takes ready objects: a backend, and a detector object or None (None here means
    every image is a face crop already; :meth:`load` turns names into objects).
    """

    def __init__(self, backend: InferenceBackend, detector: Any = None, *, tta: bool = False) -> None:
        self.backend = backend
        self.spec: ModelSpec = backend.spec
        self.detector = detector  # None: every image is one face crop (WHOLE_IMAGE)
        self.tta = tta
        self.transform = eval_transform(self.spec.preprocess)
        self._grad_cam: GradCam | None = None
        self._grad_cam_lock = threading.Lock()

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
        """Open a model and a face detector.

        ``model``: a run folder, a .safetensors or a .onnx file; None -> the bundled default model
        (ModelLoadError when this installation has none). ``detector``: None -> the default face
        detector, "none" -> images are face crops already, another registered name, or an object
        with ``detect(image) -> list[Face]``. ``backend``: "pytorch" or "onnxruntime" to choose
        between the two files of a run folder. ``tta``: also run each crop mirrored and average
        the two probability vectors. ``num_threads``: intra-op threads of the backend (None: the
        CPUs this process may use).
        """
        path = resolve_model_argument(model)
        opened = open_backend(path, prefer=backend, num_threads=num_threads)
        return cls(opened, _make_detector(detector), tta=tta)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def detector_name(self) -> str:
        return WHOLE_IMAGE if self.detector is None else str(getattr(self.detector, "name", type(self.detector).__name__))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def faces(self, image: Image.Image, *, detect: bool = True) -> list[FaceCrop]:
        """Faces of ``image``, largest first, each with the crop the network will see."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if not detect or self.detector is None:
            from face_emotion.faces.crop import CropGeometry

            width, height = image.size
            # The whole image is the crop: crop pixel (u, v) is photo pixel (u, v) scaled.
            whole = CropGeometry(max(width, height), ((width / max(width, height), 0.0, 0.0), (0.0, height / max(width, height), 0.0)))
            return [FaceCrop(Box(0, 0, width, height), 1.0, image, whole)]
        # Detectors promise largest first; sorting again (stably) keeps that true for any plug-in.
        found = sorted(self.detector.detect(image), key=lambda f: f.box_xywh[2] * f.box_xywh[3], reverse=True)
        return self.crops(image, found)

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
        """Face crops -> (N, classes) logits, before temperature: what scoring and predict share."""
        return self.backend.run(np.ascontiguousarray(self.batch(crops)))

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

        ``explain``: add a Grad-CAM heatmap per face for the predicted emotion (computed on the
        unmirrored crop): an 8-bit greyscale PNG exactly the size of the face *box*, to be laid
        over the box (255 = most important), mapped back through the crop's geometry.
        ``detect=False``: the whole image is one face (box = the whole image).
        """
        faces = self.faces(image, detect=detect)
        if not faces:
            return []
        batch = self.batch([face.crop for face in faces])
        count = len(faces)
        probs = self.probabilities(batch)
        top = probs.argmax(axis=1)
        heatmaps: list[bytes | None] = [None] * count
        if explain:
            cams = self._explain(batch, top)
            heatmaps = [heatmap_png(cam, face.geometry, face.box) for cam, face in zip(cams, faces)]
        classes = self.spec.classes
        return [
            FacePrediction(
                box=face.box,
                score=face.score,
                emotion=classes[int(top[i])],
                confidence=float(probs[i, top[i]]),
                probabilities={name: float(p) for name, p in zip(classes, probs[i])},
                heatmap_png=heatmaps[i],
            )
            for i, face in enumerate(faces)
        ]

    def _explain(self, batch: np.ndarray, class_index: np.ndarray) -> np.ndarray:
        import torch

        with self._grad_cam_lock:
            if self._grad_cam is None:
                layer = CAM_TARGET_LAYERS.get(self.spec.architecture)
                if layer is None:
                    from face_emotion.inference.backends import ExplainUnavailableError

                    raise ExplainUnavailableError(
                        f"no Grad-CAM layer is known for architecture {self.spec.architecture!r}; "
                        f"add it to CAM_TARGET_LAYERS in {__name__}"
                    )
                self._grad_cam = GradCam(self.backend.explain_network(), layer)
            grad_cam = self._grad_cam
        return grad_cam(torch.from_numpy(batch), [int(i) for i in class_index])
