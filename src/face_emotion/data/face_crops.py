"""Uncropped photos -> cached face crops, for training and evaluation on photo datasets.

The same detector, the same largest-face rule and the same `faces.crop.crop_geometry` as the
Predictor, so a model is trained on exactly the kind of crop it will see at inference. Dataset crops
(FER2013, LFW, AffectNet) go through it too: detecting the face inside an already-cropped image
and re-cutting it gives training crops the geometry of a user's photo, not the dataset's own. Detection runs once per file; crops are cached on disk by content
hash and crop settings, so a second run (or a resumed one) skips the detector entirely.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from face_emotion.cache import cache_path
from face_emotion.data.scan import Sample, Skipped
from face_emotion.imageio import ImageDecodeError, load_image
from face_emotion.models.spec import PreprocessSpec


def default_cache_dir() -> Path:
    return cache_path("face-crops")


@dataclass
class FaceCropLoader:
    """Loads the cached crop of a sample (picklable, for DataLoader workers)."""

    crops: dict[str, str]  # sample digest -> crop file

    def __call__(self, sample: Sample) -> Image.Image:
        return load_image(self.crops[sample.digest], max_pixels=None)


def prepare_face_crops(
    samples: list[Sample],
    preprocess: PreprocessSpec,
    *,
    detector: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> tuple[list[Sample], FaceCropLoader, list[Skipped]]:
    """Detect the largest face of every sample and cache its crop.

    Returns the samples that have a face, a loader for their crops, and the ones without a face
    (reported, never silently kept whole: a whole group photo labelled "happy" is not a face).
    """
    from face_emotion.faces import create_detector
    from face_emotion.faces.crop import crop_for_model

    face_detector = create_detector(detector)
    # v2: small images enlarged before detection, the five-point template.
    settings = f"v2|{face_detector.name}|{preprocess.face_margin:.3f}|{preprocess.face_align}"
    tag = hashlib.sha256(settings.encode()).hexdigest()[:10]
    cache = Path(cache_dir or default_cache_dir()) / tag
    cache.mkdir(parents=True, exist_ok=True)
    none_marker = ".noface"

    kept, skipped, crops = [], [], {}
    iterator = samples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(samples, desc="detecting faces", unit="image")
    for sample in iterator:
        crop_path = cache / f"{sample.digest}.png"
        if (cache / f"{sample.digest}{none_marker}").exists():
            skipped.append(Skipped(str(sample.path), "no face found"))
            continue
        if not crop_path.exists():
            try:
                image = load_image(sample.path)
            except ImageDecodeError as error:
                skipped.append(Skipped(str(sample.path), str(error)))
                continue
            faces = face_detector.detect(image)
            if not faces:
                (cache / f"{sample.digest}{none_marker}").touch()
                skipped.append(Skipped(str(sample.path), "no face found"))
                continue
            # One label per file: the largest face is the one the label is about.
            tmp = crop_path.with_suffix(".tmp")
            crop_for_model(image, faces[0], preprocess)[0].save(tmp, format="PNG")
            tmp.replace(crop_path)  # atomic: an interrupted run never leaves half a crop
        crops[sample.digest] = str(crop_path)
        kept.append(sample)
    return kept, FaceCropLoader(crops), skipped
