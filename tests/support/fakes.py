"""Stand-ins with the Predictor's and a face detector's interfaces: instant and deterministic."""

from __future__ import annotations

from face_emotion.inference.results import Box, FacePrediction
from face_emotion.models.spec import ModelSpec, PreprocessSpec
from support.images import solid_image_bytes

CLASSES = ("anger", "happiness", "sadness")


class FakePredictor:
    """The Predictor's interface, answering from the image size alone: ``faces`` boxes (at most 2),
    each "happiness" 0.7; ``fail``: raise it instead. Every call is recorded in ``calls``."""

    def __init__(self, faces: int = 2, fail: Exception | None = None, *, name: str = "fake-model",
                 classes: tuple[str, ...] = CLASSES, detector_name: str = "fake-detector"):
        self.spec = ModelSpec(architecture="resnet18", classes=tuple(classes), name=name, version="9.9",
                              preprocess=PreprocessSpec(image_size=32), metrics={"accuracy": 0.5})
        self.backend_name = "fake"
        self.detector_name = detector_name
        self.faces = faces
        self.fail = fail
        self.calls: list[dict] = []

    def boxes(self, width: int, height: int, detect: bool) -> list[Box]:
        if not detect:
            return [Box(0, 0, width, height)]
        return [Box(1, 1, max(1, width // 2), max(1, height // 2)), Box(2, 2, 3, 3)][: self.faces]

    def predict(self, image, *, explain=False, detect=True):
        self.calls.append({"size": image.size, "mode": image.mode, "explain": explain, "detect": detect})
        return self.answer(image, explain=explain, detect=detect)

    def answer(self, image, *, explain=False, detect=True):
        """What predict returns, without recording the call."""
        if self.fail is not None:
            raise self.fail
        heat = solid_image_bytes((4, 4)) if explain else None
        probs = dict(zip(self.spec.classes, (0.1, 0.7, 0.2)))
        return [FacePrediction(box, 0.9, self.spec.classes[1], 0.7, probs, heat)
                for box in self.boxes(*image.size, detect)]


class FixedFaces:
    """A face detector that finds the same faces (faces.Face) in every image, in the order given."""

    def __init__(self, faces, name: str = "fixed-faces"):
        self.faces = list(faces)
        self.name = name

    def detect(self, image):
        return list(self.faces)
