"""The batching code both engines share: paths -> bytes -> results -> one Arrow table.

One row per face (largest first, ``face`` counted from 1 as in the text output and the page),
one row with empty face fields for an image without a face, and one row with ``error`` set for
a file that could not be read, decoded or analysed. Probabilities are one float column per
class, named after the class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pyarrow as pa

from face_emotion.batch.inputs import BatchInputError, read_bytes

FACE_COLUMNS = ("face", "x", "y", "width", "height", "score", "emotion", "confidence")
FIXED_COLUMNS = ("path", "image_width", "image_height", *FACE_COLUMNS, "error")


def output_schema(classes: Sequence[str]) -> pa.Schema:
    clashes = sorted(set(classes) & set(FIXED_COLUMNS))
    if clashes:
        raise ValueError(f"class names {clashes} clash with batch output columns; rename the classes")
    return pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("image_width", pa.int32()),
            pa.field("image_height", pa.int32()),
            pa.field("face", pa.int32()),
            pa.field("x", pa.int32()),
            pa.field("y", pa.int32()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("score", pa.float32()),
            pa.field("emotion", pa.string()),
            pa.field("confidence", pa.float32()),
            *(pa.field(name, pa.float32()) for name in classes),
            pa.field("error", pa.string()),
        ]
    )


@dataclass
class ImageOutcome:
    path: str
    image_size: tuple[int, int] | None = None  # width, height in pixels (EXIF-upright)
    faces: list = field(default_factory=list)  # FacePrediction, largest first
    error: str | None = None


def read_file(path: str) -> tuple[bytes | None, str | None]:
    """(bytes, None) or (None, the reason, worded as `predict` words it)."""
    try:
        return read_bytes(path), None
    except BatchInputError as error:
        return None, str(error)
    except OSError as error:  # missing, permissions, a folder, a vanished object
        return None, f"cannot read file: {error.strerror or error}"


def analyse(predictor, path: str, data: bytes | None, read_error: str | None = None) -> ImageOutcome:
    """One file's bytes -> its outcome; never raises for a bad file."""
    from face_emotion.imageio import ImageDecodeError, decode_image

    if read_error is not None or data is None:
        return ImageOutcome(path, error=read_error or "cannot read file")
    try:
        image = decode_image(data)
    except ImageDecodeError as error:
        return ImageOutcome(path, error=str(error))
    try:
        faces = predictor.predict(image)
    except Exception as error:  # one image must not end the run; the message says what went wrong
        return ImageOutcome(path, image.size, error=f"prediction failed: {error.__class__.__name__}: {error}")
    return ImageOutcome(path, image.size, faces=faces)


def outcomes_table(outcomes: Sequence[ImageOutcome], schema: pa.Schema) -> pa.Table:
    classes = [name for name in schema.names if name not in FIXED_COLUMNS]
    columns: dict[str, list] = {name: [] for name in schema.names}

    def add(outcome: ImageOutcome, face_index: int | None, face) -> None:
        width, height = outcome.image_size or (None, None)
        columns["path"].append(outcome.path)
        columns["image_width"].append(width)
        columns["image_height"].append(height)
        columns["face"].append(face_index)
        box = face.box if face is not None else None
        for name in ("x", "y", "width", "height"):
            columns[name].append(getattr(box, name) if box is not None else None)
        columns["score"].append(face.score if face is not None else None)
        columns["emotion"].append(face.emotion if face is not None else None)
        columns["confidence"].append(face.confidence if face is not None else None)
        for name in classes:
            columns[name].append(face.probabilities[name] if face is not None else None)
        columns["error"].append(outcome.error)

    for outcome in outcomes:
        if outcome.faces:
            for index, face in enumerate(outcome.faces, 1):
                add(outcome, index, face)
        else:
            add(outcome, None, None)
    return pa.table(columns, schema=schema)


def read_paths(batch: pa.Table) -> pa.Table:
    """{path} -> {path, data, read_error}: the reading stage (Ray runs it as tasks)."""
    paths = batch.column("path").to_pylist()
    read = [read_file(path) for path in paths]
    return pa.table(
        {
            "path": pa.array(paths, pa.string()),
            "data": pa.array([data for data, _ in read], pa.large_binary()),
            "read_error": pa.array([error for _, error in read], pa.string()),
        }
    )


def analyse_read(predictor, batch: pa.Table, schema: pa.Schema) -> pa.Table:
    """{path, data, read_error} -> output rows: the analysing stage (one Predictor per worker)."""
    paths = batch.column("path").to_pylist()
    errors = batch.column("read_error").to_pylist()
    data = batch.column("data")
    outcomes = [analyse(predictor, path, data[i].as_py(), errors[i]) for i, path in enumerate(paths)]
    return outcomes_table(outcomes, schema)
