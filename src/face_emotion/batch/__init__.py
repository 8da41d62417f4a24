"""Batch inference over many images into a Parquet dataset, in this process or on Ray.

    inputs (files, folders, list files; local or pyarrow-filesystem URIs)
      -> paths not yet in the output -> engine (local | ray): read bytes -> decode -> Predictor
      -> rows (one per face, face counted from 1) -> Parquet part files -> summary
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from face_emotion.batch.engines import (
    DEFAULT_BATCH_SIZE,
    ENGINES,
    BatchEngine,
    BatchJob,
    EngineError,
    PredictorOptions,
    create_engine,
)
from face_emotion.batch.inputs import BatchInputError, expand_inputs
from face_emotion.batch.output import METADATA_KEY, OutputError, ParquetOutput, read_metadata
from face_emotion.batch.rows import output_schema

__all__ = [
    "DEFAULT_BATCH_SIZE", "ENGINES", "BatchEngine", "BatchInputError", "EngineError", "BatchSummary", "OutputError",
    "PredictorOptions", "create_engine", "expand_inputs", "read_metadata", "run_batch",
]


@dataclass(frozen=True)
class BatchSummary:
    images: int  # analysed in this run (each once, whether it had faces, none, or an error)
    faces: int
    errors: int
    skipped: int  # already in the output (--resume)
    seconds: float
    output: str

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _metadata(predictor) -> dict[bytes, bytes]:
    from face_emotion.version import __version__

    spec = predictor.spec
    described = {
        "model": spec.name, "model_version": spec.version, "architecture": spec.architecture,
        "classes": list(spec.classes), "detector": predictor.detector_name, "backend": predictor.backend_name,
        "face_index_base": 1, "face_emotion_version": __version__,
    }
    return {METADATA_KEY: json.dumps(described).encode()}


def run_batch(
    inputs: Sequence[str],
    output: str,
    *,
    engine: BatchEngine,
    options: PredictorOptions = PredictorOptions(),
    resume: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    part_images: int = 1000,
    part_seconds: float = 60.0,
    progress: bool | None = None,
) -> BatchSummary:
    """Analyse every image of ``inputs`` into the Parquet dataset folder ``output``.

    Rows are written in parts of about ``part_images`` images, or whatever is done every
    ``part_seconds``, so a killed run loses at most that much; ``resume`` skips the paths that
    the output already holds. ``progress``: None shows a bar on a terminal only. Raises
    BatchInputError / OutputError (and the model's and detector's load errors) before any
    image is analysed.
    """
    paths = expand_inputs(inputs)
    if not paths:
        raise BatchInputError(f"no images found in {', '.join(map(str, inputs))}")
    predictor = options.load()
    schema = output_schema(predictor.classes)
    out = ParquetOutput(output, schema.with_metadata(_metadata(predictor)), resume=resume)
    todo = [path for path in paths if path not in out.done_paths]
    started = time.monotonic()
    images = faces = errors = 0
    if todo:
        from tqdm import tqdm

        # tqdm's disable=None: shown only on a terminal.
        hidden = True if engine.shows_progress or progress is False else (None if progress is None else False)
        bar = tqdm(total=len(todo), desc="images", unit="image", disable=hidden)
        pending: list[pa.Table] = []
        pending_images, last_write = 0, time.monotonic()
        try:
            for table in engine.run(todo, BatchJob(options, schema, batch_size), predictor):
                face = table.column("face")
                first_rows = int(pc.sum(pc.or_kleene(pc.is_null(face), pc.equal(face, 1))).as_py() or 0)
                images += first_rows
                faces += table.num_rows - face.null_count
                errors += table.num_rows - table.column("error").null_count
                pending.append(table)
                pending_images += first_rows
                bar.update(first_rows)
                if pending_images >= part_images or time.monotonic() - last_write >= part_seconds:
                    out.write(pa.concat_tables(pending))
                    pending, pending_images, last_write = [], 0, time.monotonic()
        finally:
            # Whatever was analysed is kept, also when the run is interrupted.
            if pending:
                out.write(pa.concat_tables(pending))
            bar.close()
    return BatchSummary(images, faces, errors, len(paths) - len(todo), time.monotonic() - started, output)
