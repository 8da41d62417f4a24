"""The batching code both engines share: paths -> bytes -> ImageResults -> one Arrow table.

One row per face (largest first, ``face`` numbered from 1 as in every rendering of an
ImageResult), one row with empty face fields for an image without a face, and one row with
``error_code`` and ``error`` set for a file that could not be read, decoded or analysed.
Probabilities are one float column per class, named after the class.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from face_emotion.batch.inputs import BatchInputError, read_bytes
from face_emotion.errors import UnreadableFileError
from face_emotion.inference.pipeline import analyse
from face_emotion.inference.results import ImageResult

FACE_COLUMNS = ("face", "x", "y", "width", "height", "score", "emotion", "confidence")
FIXED_COLUMNS = ("path", "image_width", "image_height", *FACE_COLUMNS, "error_code", "error")


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
            pa.field("error_code", pa.string()),
            pa.field("error", pa.string()),
        ]
    )


def read_file(path: str) -> tuple[bytes | None, str | None]:
    """(bytes, None) or (None, why not, worded as `predict` words it)."""
    try:
        return read_bytes(path), None
    except BatchInputError as error:
        return None, str(error)
    except OSError as error:  # missing, permissions, a folder, a vanished object
        return None, UnreadableFileError.of(error).message


def analyse_item(predictor, path: str, data: bytes | None, read_error: str | None = None) -> ImageResult:
    """One file's bytes (or why they could not be read) -> its ImageResult, through the one pipeline."""
    if read_error is not None or data is None:
        return ImageResult.failed(UnreadableFileError.code, read_error or UnreadableFileError.of().message,
                                  path=path)
    return analyse(predictor, data, path=path)


def results_table(results: Sequence[ImageResult], schema: pa.Schema) -> pa.Table:
    """Results -> the output table: ImageResult.rows, the rows CSV output is made of, as columns."""
    classes = [name for name in schema.names if name not in FIXED_COLUMNS]
    rows = [row for result in results for row in result.rows(classes)]
    return pa.table({name: [row[name] for row in rows] for name in schema.names}, schema=schema)


def read_paths(batch: pa.Table) -> pa.Table:
    """{path} -> {path, data, read_error}: the reading stage."""
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
    return results_table([analyse_item(predictor, path, data[i].as_py(), errors[i]) for i, path in enumerate(paths)],
                         schema)
