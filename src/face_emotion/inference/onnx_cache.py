"""The derived-ONNX cache: a ``.safetensors`` model's ONNX form, exported once and kept by checksum.

It sits above inference.export (it runs the exporter) and below inference.loading (which opens what
it returns), so the exporter never reaches back for it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path

from face_emotion.cache import cache_path
from face_emotion.inference.backends import OnnxRuntimeBackend
from face_emotion.models.files import ONNX_SOURCE_SHA256_KEY, ModelLoadError, file_sha256, no_model_error

log = logging.getLogger(__name__)

# Part of a derived ONNX file's cache key: bump it when inference.export would write a different
# graph for the same weights, so stale cached files are not reused.
DERIVED_ONNX_VERSION = 1
DERIVE_TIMEOUT_S = 900


def _export_for_cache(source: str, partial: str) -> None:
    """The export the cache runs (also in a child process, see _export_elsewhere)."""
    from face_emotion.inference.export import export_onnx

    export_onnx(source, partial)


def _package_root_path() -> str:
    """PYTHONPATH for a child process that must import this very face_emotion package."""
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)


def _export_elsewhere(source: Path, partial: Path) -> None:
    """export_onnx in this process when torch is already here, else in a child process.

    Importing torch leaves several hundred MB in a process: a server worker (or the gunicorn master
    before it forks) must not pay that for a file it needs once. A plain child process, not a
    multiprocessing one: that would leave its resource-tracker process behind as a child of the
    gunicorn master for good (and forked pools are not safe with OpenMP and ONNX Runtime threads).
    """
    if "torch" in sys.modules:
        _export_for_cache(str(source), str(partial))
        return
    call = ("import sys; from face_emotion.inference.onnx_cache import _export_for_cache as e; "
            "e(sys.argv[1], sys.argv[2])")
    try:
        done = subprocess.run([sys.executable, "-c", call, str(source), str(partial)], capture_output=True, text=True,
                              timeout=DERIVE_TIMEOUT_S, env={**os.environ, "PYTHONPATH": _package_root_path()})
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"exporting {source} to ONNX took over {DERIVE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ModelLoadError(f"could not derive the ONNX form of {source}: {tail[0]}")


def derive_onnx(source: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """The ONNX form of the ``.safetensors`` file ``source``, exported once and cached under its content hash.

    The safetensors file stays the one description of the model: the ONNX file is derived from it
    by inference.export.export_onnx (which refuses to write a graph whose probabilities differ from
    PyTorch's by more than inference.export.FP32_TOLERANCE) and named by the weights' sha256, so a
    retrained model never meets a stale graph. Concurrent callers (server workers starting
    together) wait on a file lock and export once.
    """
    source = Path(source)
    if not source.is_file():
        raise no_model_error(source)
    digest = file_sha256(source)
    cache = Path(cache_dir) if cache_dir is not None else cache_path("onnx")
    target = cache / f"{digest[:32]}-v{DERIVED_ONNX_VERSION}.onnx"
    if target.is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache / f"{target.name}.lock", "w")
    except OSError as error:
        raise ModelLoadError(f"cannot write the ONNX form of {source} into {cache} ({error}): set "
                             f"FACE_EMOTION_CACHE to a writable folder, or export it with `face-emotion export` "
                             f"and pass the .onnx") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():  # another process exported it while this one waited
            return target
        partial = cache / f".{target.stem}.{os.getpid()}.onnx"
        log.info("deriving the ONNX form of %s (once; cached as %s)", source, target)
        try:
            _export_elsewhere(source, partial)
        except ModelLoadError:
            partial.unlink(missing_ok=True)
            raise
        except Exception as error:  # noqa: BLE001 - whatever the exporter met, the model cannot be derived
            partial.unlink(missing_ok=True)
            raise ModelLoadError(f"could not derive the ONNX form of {source}: "
                                 f"{type(error).__name__}: {error}") from None
        if not partial.is_file():
            raise ModelLoadError(f"could not derive the ONNX form of {source}: the export wrote no file")
        os.replace(partial, target)
    return target


def open_derived_onnx(source: str | Path, *, num_threads: int | None = None,
                      cache_dir: str | Path | None = None) -> "OnnxRuntimeBackend":
    """A .safetensors model run by ONNX Runtime through its derived ONNX form (see derive_onnx)."""
    source = Path(source)
    target = derive_onnx(source, cache_dir=cache_dir)
    try:
        backend = OnnxRuntimeBackend(target, num_threads=num_threads)
    except ModelLoadError:
        # A damaged cache file (disk full, truncated copy) is replaced rather than trusted.
        log.warning("the cached ONNX form %s is unreadable; deriving it again", target)
        target.unlink(missing_ok=True)
        backend = OnnxRuntimeBackend(derive_onnx(source, cache_dir=cache_dir), num_threads=num_threads)
    if backend.metadata.get(ONNX_SOURCE_SHA256_KEY) != file_sha256(source):
        raise ModelLoadError(f"{backend.path} was not exported from {source} (checksum differs); delete it")
    return backend
