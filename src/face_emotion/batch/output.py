"""The output: a Parquet dataset folder of part files, written so that a killed job can resume.

Each part is written under a name starting with "_" (which pyarrow, pandas, Spark and DuckDB
datasets skip) and renamed when complete, so a job killed mid-write leaves only readable parts
behind; `--resume` reads the ``path`` column of those parts and skips every path in it.
The schema metadata key ``face_emotion`` holds JSON: model name and version, classes, detector.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from face_emotion.batch.inputs import filesystem_for, is_uri
from face_emotion.errors import FaceEmotionError

METADATA_KEY = b"face_emotion"
# Fields of the metadata that must agree for --resume to add rows to an existing output.
RESUME_MUST_MATCH = ("model", "model_version", "classes", "detector")


class OutputError(FaceEmotionError, ValueError):
    """The output cannot be written or resumed as asked; the message says what to do."""

    code = "bad_output"


def read_metadata(schema: pa.Schema) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


@dataclass
class ParquetOutput:
    """``location``: a local folder or a URI; created when missing."""

    location: str
    schema: pa.Schema  # with the metadata attached
    resume: bool = False

    def __post_init__(self) -> None:
        if is_uri(self.location):
            self.filesystem, self.root = filesystem_for(self.location)
        else:
            self.filesystem, self.root = pafs.LocalFileSystem(), os.path.abspath(self.location)
        self.root = self.root.rstrip("/")
        self._run = uuid.uuid4().hex[:8]
        self._parts = 0
        info = self.filesystem.get_file_info(self.root)
        if info.type == pafs.FileType.File:
            raise OutputError(
                f"--output {self.location} is a file; batch writes a Parquet dataset folder "
                "(part files inside it): choose a folder name, e.g. faces.parquet"
            )
        self.done_paths: set[str] = set()
        parts = self._part_files() if info.type == pafs.FileType.Directory else []
        if parts and not self.resume:
            raise OutputError(
                f"--output {self.location} already holds results ({len(parts)} part files): "
                "pass --resume to skip the paths done, or choose another --output"
            )
        for part in parts:
            self._check_compatible(part)
            self.done_paths.update(pq.read_table(part, columns=["path"], filesystem=self.filesystem)
                                   .column("path").to_pylist())
        self.filesystem.create_dir(self.root, recursive=True)

    def _part_files(self) -> list[str]:
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.root, recursive=False))
        return sorted(
            info.path for info in infos
            if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
            and not info.base_name.startswith(("_", "."))
        )

    def _check_compatible(self, part: str) -> None:
        theirs = read_metadata(pq.read_schema(part, filesystem=self.filesystem))
        ours = read_metadata(self.schema)
        for key in RESUME_MUST_MATCH:
            if theirs.get(key) != ours.get(key):
                raise OutputError(
                    f"--resume: {part} was written with {key} {theirs.get(key)!r}, this run has {ours.get(key)!r}; "
                    "resume with the same model and detector, or choose another --output"
                )

    def write(self, table: pa.Table) -> str:
        """Write one part (all rows of each image in it) and return its path."""
        self._parts += 1
        name = f"part-{self._run}-{self._parts:05d}.parquet"
        final = f"{self.root}/{name}"
        temporary = f"{self.root}/_writing-{name}"
        pq.write_table(table.replace_schema_metadata(self.schema.metadata), temporary, filesystem=self.filesystem)
        self.filesystem.move(temporary, final)
        return final
