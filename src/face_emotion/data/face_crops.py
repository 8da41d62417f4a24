"""Uncropped photos -> face crops, for training and evaluation on photo datasets.

The same detector, the same largest-face rule and the same `faces.crop.crop_for_model` as the
Predictor, so a model is trained on exactly the kind of crop it will see at inference. Detection
runs once per file and is cached by content hash (data.crop_bank.detect_largest_faces), whatever
the crop settings: a second run, a resumed one, or one with another margin skips the detector.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from face_emotion.data.crop_bank import detect_largest_faces
from face_emotion.data.scan import Sample, Skipped
from face_emotion.faces.base import Face
from face_emotion.imageio import load_image
from face_emotion.models.spec import PreprocessSpec


def load_whole_image(sample: Sample) -> Image.Image:
    """Pre-cropped datasets: the whole file is the face."""
    return load_image(sample.path, max_pixels=None)


@dataclass
class FaceCropLoader:
    """Cuts the model's crop of a sample's cached face (picklable, for DataLoader workers)."""

    faces: dict[str, Face]  # sample digest -> its largest face
    preprocess: PreprocessSpec

    def __call__(self, sample: Sample) -> Image.Image:
        from face_emotion.faces.crop import crop_for_model

        return crop_for_model(load_image(sample.path, max_pixels=None), self.faces[sample.digest], self.preprocess)[0]


def prepare_face_crops(
    samples: list[Sample],
    preprocess: PreprocessSpec,
    *,
    detector: str | None = None,
    progress: bool = False,
) -> tuple[list[Sample], FaceCropLoader, list[Skipped]]:
    """Detect the largest face of every sample (cached).

    Returns the samples that have a face, a loader for their crops, and the ones without a face
    (reported, never silently kept whole: a whole group photo labelled "happy" is not a face).
    """
    faces, unreadable = detect_largest_faces(samples, detector, progress=progress)
    kept = [s for s in samples if faces.get(s.digest) is not None]
    faceless = [s for s in samples if s.digest in faces and faces[s.digest] is None]
    skipped = unreadable + [Skipped(str(s.path), "no face found") for s in faceless]
    return kept, FaceCropLoader({s.digest: faces[s.digest] for s in kept}, preprocess), skipped
