"""Inputs of `batch`: files, folders (recursive) and list files -> one ordered list of paths.

A path is a local path or any URI that pyarrow's filesystems open (s3://, gs://, hdfs://, ...).
Local paths are made absolute, so the output names each file unambiguously and `--resume`
finds it again from any working directory or cluster node with the same mount.
"""

from __future__ import annotations

import os
import posixpath
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterable

from face_emotion.errors import FaceEmotionError
from face_emotion.imageio import IMAGE_EXTENSIONS

# A file with one of these suffixes lists paths to read rather than being an image itself.
LIST_SUFFIXES = frozenset({".txt", ".csv", ".parquet"})


class BatchInputError(FaceEmotionError, ValueError):
    """An input argument that names nothing usable; the message says which and why."""

    code = "bad_input"


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


@lru_cache(maxsize=64)
def _filesystem_for_root(root: str):
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(root)[0]


def filesystem_for(uri: str):
    """(pyarrow filesystem, path inside it) for a URI; one filesystem object per scheme and host.

    Building an S3 or GCS filesystem resolves regions and credentials, so it is done once per
    bucket in each process rather than once per file.
    """
    scheme, rest = uri.split("://", 1)
    host, _, key = rest.partition("/")
    try:
        filesystem = _filesystem_for_root(f"{scheme}://{host}")
    except Exception as error:  # ArrowInvalid, OSError, ...: unknown scheme, missing library, no credentials
        raise BatchInputError(f"cannot open {uri}: {error}") from None
    # pyarrow's own path convention: "bucket/key" for object stores, "/path" for HDFS.
    inner = "/" + key if scheme in ("hdfs", "viewfs") else rest.lstrip("/")
    return filesystem, inner


def read_bytes(path: str) -> bytes:
    """The bytes of one file, local or URI. Raises OSError (or BatchInputError) when unreadable."""
    if not is_uri(path):
        return Path(path).read_bytes()
    filesystem, inner = filesystem_for(path)
    with filesystem.open_input_stream(inner) as stream:
        return stream.read()


def _normalise(path: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://"):]
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def _join(parent: str, entry: str) -> str:
    """An entry of a list file: absolute or a URI as it stands, relative to the list's folder otherwise."""
    if is_uri(entry) or entry.startswith("file://") or os.path.isabs(os.path.expanduser(entry)):
        return _normalise(entry)
    if is_uri(parent):
        scheme, rest = parent.split("://", 1)
        return f"{scheme}://{posixpath.normpath(f'{rest}/{entry}')}"
    return os.path.normpath(os.path.join(parent, entry))


def _parent(path: str) -> str:
    if is_uri(path):
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{rest.rsplit('/', 1)[0]}"
    return os.path.dirname(path)


def read_list_file(path: str) -> list[str]:
    """Paths listed in a .txt (one a line; blank lines and # comments skipped), or in the
    ``path`` column of a .csv or .parquet file (a `batch` output is a valid list)."""
    suffix = PurePosixPath(path).suffix.lower()
    try:
        if suffix == ".txt":
            text = read_bytes(path).decode("utf-8-sig")
            entries = [line.strip() for line in text.splitlines()]
            entries = [e for e in entries if e and not e.startswith("#")]
        else:
            entries = _path_column(path, suffix)
    except (OSError, UnicodeDecodeError) as error:
        raise BatchInputError(f"cannot read list file {path}: {error}") from None
    parent = _parent(path)
    return [_join(parent, entry) for entry in entries]


def _path_column(path: str, suffix: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if suffix == ".csv":
            table = pacsv.read_csv(pa.py_buffer(read_bytes(path)),
                                   convert_options=pacsv.ConvertOptions(column_types={"path": pa.string()}))
        else:
            table = pq.read_table(pa.py_buffer(read_bytes(path)), columns=None)
    except pa.ArrowInvalid as error:
        raise BatchInputError(f"cannot read list file {path}: {error}") from None
    if "path" not in table.column_names:
        raise BatchInputError(
            f"list file {path} has no 'path' column (columns: {', '.join(table.column_names) or 'none'})"
        )
    return [value for value in table.column("path").to_pylist() if value]


def _list_folder(path: str) -> list[str]:
    if not is_uri(path):
        found = (os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names)
        return sorted(p for p in found if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(p))
    from pyarrow import fs as pafs

    filesystem, inner = filesystem_for(path)
    prefix = path.rstrip("/")[: len(path.rstrip("/")) - len(inner.rstrip("/"))]
    infos = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
    return sorted(
        prefix + info.path for info in infos
        if info.type == pafs.FileType.File and PurePosixPath(info.path).suffix.lower() in IMAGE_EXTENSIONS
    )


def _kind(path: str) -> str:
    """"folder", "file" or "missing"."""
    if not is_uri(path):
        return "folder" if os.path.isdir(path) else "file" if os.path.exists(path) else "missing"
    from pyarrow import fs as pafs

    filesystem, inner = filesystem_for(path)
    try:
        kind = filesystem.get_file_info(inner).type
    except OSError as error:
        raise BatchInputError(f"cannot open {path}: {error}") from None
    return {pafs.FileType.Directory: "folder", pafs.FileType.File: "file"}.get(kind, "missing")


def expand_inputs(arguments: Iterable[str]) -> list[str]:
    """Every image to analyse, each once, in argument order (folders sorted, recursive).

    Folders contribute files with an image extension; a file named directly, or listed in a
    list file, is taken whatever its extension (a failure to read it becomes its error row).
    """
    paths: list[str] = []
    for argument in arguments:
        path = _normalise(str(argument))
        kind = _kind(path)
        if kind == "missing":
            raise BatchInputError(f"no such file or folder: {argument}")
        if kind == "folder":
            paths.extend(_list_folder(path))
        elif PurePosixPath(path).suffix.lower() in LIST_SUFFIXES:
            paths.extend(read_list_file(path))
        else:
            paths.append(path)
    return list(dict.fromkeys(paths))
