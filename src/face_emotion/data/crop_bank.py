"""Samples -> a bank of face crops decoded once and held in memory, in two framings.

Why a bank: decoding and resizing a JPEG per sample per epoch costs more than the network step of
a small model, so a GPU waits on the loader and a CPU pays twice. The bank decodes every file
once into a uint8 array at the model's detail level; training moves it to the device once and
augments whole batches there (data.augment).

Why two framings: a model trained only on the detector's template crop is right on that framing
and wrong on the same face framed another way (a dataset's own crop handed over with
``--no-detect``, a detector box that jitters from frame to frame). Each file therefore gives
  - a "template" view: the crop geometry of the model (faces.crop.crop_for_model's landmark
    template and margin), what predict / serve / batch cut from a photo, and
  - a "given" view: the file as it is, what ``evaluate --no-detect`` and folders of crops give.
Every view is stored with ``context`` extra on each side (real pixels for the template view,
edge-replicated ones for the given view), so zoom-out augmentation shows what lies around.
A file in which no face is found keeps its given view only: it is still a labelled face crop.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from face_emotion.cache import cache_path
from face_emotion.data.scan import Sample, Skipped
from face_emotion.errors import DatasetError
from face_emotion.faces.base import Face
from face_emotion.imageio import ImageDecodeError, load_image
from face_emotion.models.spec import PreprocessSpec

TEMPLATE, GIVEN = 0, 1  # view kinds
# Extra context stored around each view, per side, as a fraction of the view's side: zoom-out
# augmentation up to 1 + 2 * context of the crop can then show real surroundings.
DEFAULT_CONTEXT = 0.25


@dataclass
class CropBank:
    """Decoded crops: ``pixels[i]`` is view i, uint8 (N, S, S) grey or (N, S, S, 3) RGB.

    ``sample_index[i]`` is the sample that view i belongs to and ``kind[i]`` its framing
    (TEMPLATE or GIVEN). The crop a model would see is the central ``core_fraction`` of the side.
    ``faces`` holds each sample's detected largest face (None: none found; empty without detection),
    so the final scoring cuts the same crops without reading the detection cache again.
    """

    pixels: np.ndarray
    sample_index: np.ndarray  # int64 (N,)
    kind: np.ndarray  # int8 (N,)
    core_fraction: float
    samples: list[Sample]
    faces: dict[str, Face | None]


def stored_side(preprocess: PreprocessSpec, context: float) -> int:
    detail = int(preprocess.face_resolution or preprocess.image_size)
    return int(round(detail * (1.0 + 2.0 * context)))


def detect_largest_faces(
    samples: Sequence[Sample], detector: str | None = None, *, progress: bool = False
) -> tuple[dict[str, Face | None], list[Skipped]]:
    """The largest face of every sample (None: no face found), cached by content hash.

    The cache is one JSON line per file, appended as detection goes, so an interrupted pass
    resumes where it stopped and any later crop setting reuses it without detecting again.
    """
    from face_emotion.faces import create_detector

    face_detector = create_detector(detector)
    # The file's version changes with what it stores: faces exactly as detected, small images
    # enlarged first, so a cached crop is the one `predict` cuts (rounded landmarks could flip an answer).
    path = cache_path("faces") / f"{face_detector.name}-v3.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    known: dict[str, Face | None] = {}
    errors: dict[str, str] = {}  # digest -> why the file could not be read
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
            if "error" in row:
                errors[row["digest"]] = row["error"]
            else:
                known[row["digest"]] = _face_from_dict(row["face"])
    unique = dict((s.digest, s) for s in samples).values()
    todo = [s for s in unique if s.digest not in known and s.digest not in errors]
    if todo:
        iterator = todo
        if progress:
            from tqdm import tqdm

            iterator = tqdm(todo, desc="detecting faces", unit="image")
        with open(path, "a") as handle:
            for sample in iterator:
                try:
                    image = load_image(sample.path)
                except ImageDecodeError as error:
                    errors[sample.digest] = str(error)
                    row = {"digest": sample.digest, "error": str(error)}
                else:
                    faces = face_detector.detect(image)
                    known[sample.digest] = faces[0] if faces else None
                    row = {"digest": sample.digest, "face": _face_to_dict(faces[0]) if faces else None}
                handle.write(json.dumps(row) + "\n")
                handle.flush()
    unreadable = [Skipped(str(s.path), errors[s.digest]) for s in samples if s.digest in errors]
    return {s.digest: known[s.digest] for s in samples if s.digest in known}, unreadable


def _face_to_dict(face: Face) -> dict:
    """The face as detected, every float kept (JSON writes a float so that it reads back equal)."""
    landmarks = None if face.landmarks is None else {k: list(v) for k, v in face.landmarks.items()}
    return {"box_xywh": list(face.box_xywh), "score": face.score, "landmarks": landmarks}


def _face_from_dict(data: dict | None) -> Face | None:
    if data is None:
        return None
    landmarks = data.get("landmarks")
    points = None if landmarks is None else {k: tuple(v) for k, v in landmarks.items()}
    return Face(tuple(data["box_xywh"]), data["score"], points)


def _to_array(image: Image.Image, side: int, grey: bool) -> np.ndarray:
    image = image.convert("L" if grey else "RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def template_view(image: Image.Image, face: Face, preprocess: PreprocessSpec, context: float) -> np.ndarray:
    """The model's crop of ``face`` with ``context`` around it, at the stored side."""
    from face_emotion.faces.crop import crop_geometry, cut

    margin = float(preprocess.face_margin)
    # The crop side is scale * (1 + 2 * margin); with context it becomes that times (1 + 2 * context).
    wider = ((1.0 + 2.0 * margin) * (1.0 + 2.0 * context) - 1.0) / 2.0
    crop = cut(image, crop_geometry(face, wider, preprocess.face_align))
    return _to_array(crop, stored_side(preprocess, context), preprocess.color_mode == "grayscale")


def given_view(image: Image.Image, preprocess: PreprocessSpec, context: float) -> np.ndarray:
    """The whole file as the crop (as ``--no-detect`` reads it), edge-replicated context around."""
    side = stored_side(preprocess, context)
    core = int(preprocess.face_resolution or preprocess.image_size)
    pixels = _to_array(image, core, preprocess.color_mode == "grayscale")
    pad = (side - core) // 2
    widths = ((pad, side - core - pad), (pad, side - core - pad)) + (((0, 0),) if pixels.ndim == 3 else ())
    return np.pad(pixels, widths, mode="edge")


def build_crop_bank(
    samples: Sequence[Sample],
    preprocess: PreprocessSpec,
    *,
    detect: bool = True,
    given: bool = True,
    detector: str | None = None,
    context: float = DEFAULT_CONTEXT,
    progress: bool = False,
) -> tuple[CropBank, list[Skipped]]:
    """Decode every sample once into its views; cached on disk by content and settings.

    detect: add template views (the detector's crop); given: add the file-as-crop views. With
    ``detect`` and not ``given`` a file without a face is skipped and listed, as before.
    """
    samples = list(samples)
    settings = json.dumps([preprocess.face_margin, preprocess.face_align, preprocess.face_resolution,
                           preprocess.image_size, preprocess.color_mode, context, detector, detect, given, "v1"])
    key = hashlib.sha256((settings + "".join(s.digest for s in samples)).encode()).hexdigest()[:16]
    cached = cache_path("crop-banks") / f"{key}.npz"
    faces: dict[str, Face | None] = {}
    skipped: list[Skipped] = []
    if detect:
        faces, skipped = detect_largest_faces(samples, detector, progress=progress)
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as data:
            bank = CropBank(data["pixels"], data["sample_index"], data["kind"], float(data["core_fraction"]),
                            samples, faces)
        return bank, skipped + _faceless(samples, faces, detect, given)
    pixels, owners, kinds = [], [], []
    unreadable = {s.path for s in skipped}
    iterator: Sequence[Sample] = samples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(samples, desc="decoding crops", unit="image")
    for index, sample in enumerate(iterator):
        if str(sample.path) in unreadable:
            continue
        try:
            image = load_image(sample.path, max_pixels=None)
        except ImageDecodeError as error:
            skipped.append(Skipped(str(sample.path), str(error)))
            continue
        face = faces.get(sample.digest)
        if detect and face is not None:
            pixels.append(template_view(image, face, preprocess, context))
            owners.append(index)
            kinds.append(TEMPLATE)
        if given:
            pixels.append(given_view(image, preprocess, context))
            owners.append(index)
            kinds.append(GIVEN)
    side = stored_side(preprocess, context)
    shape = (0, side, side) if preprocess.color_mode == "grayscale" else (0, side, side, 3)
    bank = CropBank(
        np.stack(pixels) if pixels else np.zeros(shape, np.uint8), np.asarray(owners, np.int64),
        np.asarray(kinds, np.int8), 1.0 / (1.0 + 2.0 * context), samples, faces,
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, pixels=bank.pixels, sample_index=bank.sample_index, kind=bank.kind, core_fraction=bank.core_fraction)
    tmp.replace(cached)
    return bank, skipped + _faceless(samples, faces, detect, given)


def _faceless(samples: Sequence[Sample], faces: dict, detect: bool, given: bool) -> list[Skipped]:
    """Files without a face: skipped when only template views are built, else only noted."""
    if not detect or given:
        return []
    return [Skipped(str(s.path), "no face found") for s in samples if s.digest in faces and faces[s.digest] is None]


def read_digest_table(path: str | Path, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """A CSV of per-file class scores keyed by content hash: ``sha256_prefix`` (or ``sha256``),
    then one column per class name. Used for teacher logits (``--distill``) and soft labels.

    Column names are matched to ``classes`` by canonical name (angry -> anger, ...).
    """
    import csv

    from face_emotion.classes import canonical_class

    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        key = next((f for f in ("sha256_prefix", "sha256", "digest") if f in fields), None)
        if key is None:
            raise DatasetError(f"{path}: needs a sha256_prefix (or sha256) column, found {', '.join(fields)}")
        by_class = {canonical_class(f): f for f in fields if f != key}
        missing = [c for c in classes if c not in by_class]
        if missing:
            raise DatasetError(f"{path}: no column for class(es) {', '.join(missing)}")
        table = {}
        for row in reader:
            table[row[key].strip().lower()] = np.array([float(row[by_class[c]]) for c in classes], np.float32)
    return table


def lookup(table: dict[str, np.ndarray], digest: str) -> np.ndarray | None:
    """The row for a full SHA-256 digest, whatever prefix length the table was keyed by."""
    if not table:
        return None
    width = len(next(iter(table)))
    return table.get(digest[:width].lower())

