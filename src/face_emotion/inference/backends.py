"""Inference backends: a float32 NCHW batch -> logits, from a PyTorch or an ONNX Runtime model file.

A backend is a small object satisfying :class:`InferenceBackend`; which one opens a file is decided
by the file's suffix through :data:`BACKENDS`, so a new runtime is a new class plus one registry
entry. Backends return *logits*: temperature and softmax are applied once, in the Predictor, so
every backend yields the same probabilities for the same logits.

Both formats describe themselves (the ModelSpec JSON rides in the safetensors header or in the
ONNX ``metadata_props``), and neither is ever unpickled.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import numpy as np

from face_emotion.cache import cache_path
from face_emotion.errors import UnknownNameError
from face_emotion.models.spec import ModelSpec
from face_emotion.models.store import (
    SPEC_METADATA_KEY,
    WEIGHTS_FILE,
    ModelLoadError,
    no_model_error,
    refuse_pickle,
    resolve_model_path,
)

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

# ONNX metadata_props keys written by inference.export and read here. The spec is under the same
# key as in the safetensors header, so both formats carry one description format.
ONNX_SPEC_KEY = SPEC_METADATA_KEY
ONNX_CLASSES_KEY = "class_names"  # JSON list, for consumers that do not know the spec format
ONNX_PREPROCESS_KEY = "preprocess"  # JSON object, likewise
ONNX_SOURCE_SHA256_KEY = "face_emotion_source_sha256"  # sha256 of the .safetensors exported from
ONNX_QUANTIZATION_KEY = "face_emotion_quantization"  # "none", or how the int8 model was made
ONNX_INPUT_NAME = "input"
ONNX_OUTPUT_NAME = "logits"
# Part of a derived ONNX file's cache key: bump it when inference.export would write a different
# graph for the same weights, so stale cached files are not reused.
DERIVED_ONNX_VERSION = 1
DERIVE_TIMEOUT_S = 900


@runtime_checkable
class InferenceBackend(Protocol):
    """A loaded model that maps a preprocessed batch to logits.

    ``run`` takes float32 (N, 3, S, S) with S = spec.preprocess.image_size, already normalised by
    transforms.eval_transform, and returns float32 (N, len(classes)) logits. It must be safe to
    call from several threads at once (a web server does).
    """

    name: str
    spec: ModelSpec
    path: Path

    @property
    def classes(self) -> tuple[str, ...]: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset/cgroup cpusets, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _check_batch(batch: np.ndarray, spec: ModelSpec) -> np.ndarray:
    size = int(spec.preprocess.image_size)
    if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
        raise ValueError(f"expected a batch of shape (N, 3, {size}, {size}), got {tuple(batch.shape)}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PyTorchBackend:
    """A ``.safetensors`` model (models.store) run by eager PyTorch on the CPU."""

    name = "pytorch"

    def __init__(self, path: str | Path, *, num_threads: int | None = None) -> None:
        import torch

        from face_emotion.models.store import load_model

        self.path = resolve_model_path(path)
        self.network, self.spec = load_model(self.path)
        # torch's intra-op pool is process-wide: an explicit num_threads sets it. Otherwise its
        # default (physical cores of the host) is only capped at the CPUs a container or taskset
        # grants, since oversubscription is slower than fewer threads; a lower limit that the
        # application chose is kept.
        if num_threads:
            torch.set_num_threads(int(num_threads))
        elif torch.get_num_threads() > available_cpus():
            torch.set_num_threads(available_cpus())

    @classmethod
    def from_network(cls, network: "nn.Module", spec: ModelSpec) -> "PyTorchBackend":
        """A backend over a network in memory (training scores its splits through this)."""
        backend = cls.__new__(cls)
        backend.path, backend.network, backend.spec = None, network.eval(), spec
        return backend

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        batch = _check_batch(batch, self.spec)
        # inference_mode: no autograd bookkeeping; eval-mode modules hold no per-call state, so
        # concurrent calls from server threads are safe.
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(batch))
        return logits.float().numpy()


class OnnxRuntimeBackend:
    """An ``.onnx`` model written by inference.export, run by ONNX Runtime on the CPU."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise no_model_error(self.path)
        options = ort.SessionOptions()
        # One request's batch uses every granted core; requests are served one after another by
        # the session rather than by a second thread pool fighting the first.
        options.intra_op_num_threads = num_threads or available_cpus()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep instead of spinning (as OMP_WAIT_POLICY=PASSIVE does for torch):
        # the face detector's session, this one on the video analyser's classifier thread, and other
        # processes share few cores, and spinning threads took the cores the others were waiting for.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelLoadError(f"{self.path} is not a readable ONNX model (truncated or tampered?): {error}") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if ONNX_SPEC_KEY not in self.metadata:
            raise ModelLoadError(
                f"{self.path} has no face-emotion description in its metadata: export it with "
                f"`face-emotion export --model RUN_DIR --output FILE.onnx`"
            )
        try:
            self.spec = ModelSpec.from_dict(json.loads(self.metadata[ONNX_SPEC_KEY]))
        except (ValueError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"{self.path}: bad model description: {error}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{self.path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self._input_name = inputs[0].name
        self._check_shapes(inputs[0].shape, outputs[0].shape)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def _check_shapes(self, input_shape, output_shape) -> None:
        """The graph must take (N, 3, S, S) and give (N, len(classes)) as its metadata says.

        Metadata is only text beside the graph: a file whose description lies (another class count
        or image size) would otherwise be answered with misnamed or missing probabilities.
        A symbolic class dimension is checked by running one blank image.
        """
        size = int(self.spec.preprocess.image_size)
        expected_in, expected_out = (None, 3, size, size), (None, len(self.spec.classes))
        for what, shape, expected in (("input", input_shape, expected_in), ("output", output_shape, expected_out)):
            shape = list(shape or [])
            if len(shape) != len(expected) or any(
                isinstance(dim, int) and want is not None and dim != want for dim, want in zip(shape, expected)
            ):
                shown = ["N" if d is None else d for d in expected]
                raise ModelLoadError(
                    f"{self.path}: the graph's {what} has shape {shape} but its description "
                    f"({len(self.spec.classes)} classes, {size} px) needs {shown}; the file was altered or "
                    f"not exported by `face-emotion export`"
                )
        if not isinstance(list(output_shape or [None, None])[-1], int):
            try:
                self.run(np.zeros((1, 3, size, size), dtype=np.float32))
            except Exception as error:  # noqa: BLE001 - onnxruntime's own error types, or run()'s check
                raise ModelLoadError(f"{self.path}: a trial run failed, the graph does not match its "
                                     f"description: {error}") from None

    @property
    def quantization(self) -> str:
        return self.metadata.get(ONNX_QUANTIZATION_KEY, "none")

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = _check_batch(batch, self.spec)
        # InferenceSession.run is documented thread-safe.
        (logits,) = self.session.run(None, {self._input_name: batch})
        logits = np.asarray(logits, dtype=np.float32)
        if logits.shape != (len(batch), len(self.spec.classes)):
            raise RuntimeError(f"{self.path} gave logits of shape {logits.shape} for {len(batch)} image(s) and "
                               f"{len(self.spec.classes)} classes: the graph does not match its description")
        return logits


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
    call = "import sys; from face_emotion.inference.backends import _export_for_cache as e; e(sys.argv[1], sys.argv[2])"
    try:
        done = subprocess.run([sys.executable, "-c", call, str(source), str(partial)], capture_output=True, text=True,
                              timeout=DERIVE_TIMEOUT_S, env={**os.environ, "PYTHONPATH": _package_root_path()})
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"exporting {source} to ONNX took over {DERIVE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ModelLoadError(f"could not derive the ONNX form of {source}: {tail[0]}")


def derive_onnx(source: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """The ONNX form of a ``.safetensors`` model, exported once and cached under its content hash.

    The safetensors file stays the one description of the model: the ONNX file is derived from it
    by inference.export.export_onnx (which refuses to write a graph whose probabilities differ from
    PyTorch's by more than inference.export.FP32_TOLERANCE) and named by the weights' sha256, so a
    retrained model never meets a stale graph. Concurrent callers (server workers starting
    together) wait on a file lock and export once.
    """
    source = resolve_model_path(source)
    digest = file_sha256(source)
    cache = Path(cache_dir) if cache_dir is not None else cache_path("onnx")
    target = cache / f"{digest[:32]}-v{DERIVED_ONNX_VERSION}.onnx"
    if target.is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache / f"{target.name}.lock", "w")
    except OSError as error:
        raise ModelLoadError(f"cannot write the ONNX form of {source} into {cache} ({error}): set FACE_EMOTION_CACHE "
                             f"to a writable folder, or export it with `face-emotion export` and pass the .onnx") from None
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
            raise ModelLoadError(f"could not derive the ONNX form of {source}: {type(error).__name__}: {error}") from None
        if not partial.is_file():
            raise ModelLoadError(f"could not derive the ONNX form of {source}: the export wrote no file")
        os.replace(partial, target)
    return target


def open_derived_onnx(source: str | Path, *, num_threads: int | None = None,
                      cache_dir: str | Path | None = None) -> "OnnxRuntimeBackend":
    """A .safetensors model run by ONNX Runtime through its derived ONNX form (see derive_onnx)."""
    source = resolve_model_path(source)
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


# model-file suffix -> backend class: what opens a file of that format.
BACKENDS: dict[str, Callable[..., InferenceBackend]] = {
    ".safetensors": PyTorchBackend,
    ".onnx": OnnxRuntimeBackend,
}
# Every verb runs ONNX Runtime unless told otherwise: the same answers as PyTorch (export checks
# that), faster, and without torch's ~1 GB in the process. PyTorch is for gradients (training).
DEFAULT_BACKEND = OnnxRuntimeBackend.name


def backend_names() -> list[str]:
    return [factory.name for factory in BACKENDS.values()]


def check_model_suffix(path: Path) -> None:
    """ModelLoadError unless ``path`` is a file format a backend reads (a pickle never is)."""
    suffix = path.suffix.lower()
    if suffix in BACKENDS:
        return
    refuse_pickle(path)
    raise ModelLoadError(f"{path}: unknown model format {suffix!r}; expected one of {sorted(BACKENDS)}")


def _current_onnx(onnx: Path, weights: Path) -> bool:
    """Whether ``onnx`` was exported from ``weights`` as they are now (a run folder may hold a stale one)."""
    try:
        import onnx as onnx_lib  # reads the metadata without building a session

        props = {p.key: p.value for p in onnx_lib.load(str(onnx), load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001 - unreadable: OnnxRuntimeBackend will say why if it is chosen
        return True
    expected = props.get(ONNX_SOURCE_SHA256_KEY)
    return expected is None or expected == file_sha256(weights)


def resolve_model(model: str | Path | None = None, backend: str | None = None) -> tuple[Path, str]:
    """The one model resolver: (the model file to open, the backend name that runs it), opening nothing.

    ``model``: a run folder, a .safetensors or a .onnx file; None: the bundled model.
    ``backend``: None or "onnxruntime" (the default): a .onnx file as it is, else the .safetensors
    file, to be run through its derived ONNX form (derive_onnx); a run folder's own model.onnx is
    taken when it was exported from the folder's weights as they are now. "pytorch": the
    .safetensors file. Raises ModelLoadError (missing, a pickle, an unknown format) and
    UnknownNameError.
    """
    from face_emotion.models.bundled import resolve_model_argument

    if backend is not None and backend not in backend_names():
        raise UnknownNameError(f"unknown backend {backend!r}; choose one of {', '.join(backend_names())}")
    wanted = backend or DEFAULT_BACKEND
    given = resolve_model_argument(model)
    path = resolve_model_path(given, (".safetensors", ".onnx") if wanted == PyTorchBackend.name else (".onnx", ".safetensors"))
    check_model_suffix(path)
    if wanted == PyTorchBackend.name and path.suffix.lower() != ".safetensors":
        raise ModelLoadError(f"{path} is an ONNX model; the pytorch backend reads .safetensors files "
                             f"(pass the run folder or its model.safetensors)")
    weights = path.parent / WEIGHTS_FILE
    if path.suffix.lower() == ".onnx" and given.is_dir() and weights.is_file() and not _current_onnx(path, weights):
        path = weights  # a stale model.onnx beside newer weights: run the weights
    return path, wanted


def shipped_onnx(model: str | Path | None = None, *, int8: bool = False) -> Path | None:
    """The ONNX form a model folder already holds (``model.onnx``, or ``model.int8.onnx`` with
    ``int8``), when it was made from the folder's weights as they are now; None otherwise.

    The bundled model ships both, so the base install (no torch) exports and serves it as it is.
    """
    from face_emotion.models.bundled import resolve_model_argument

    folder = resolve_model_argument(model)
    if not folder.is_dir():
        return None
    onnx = folder / f"{Path(WEIGHTS_FILE).stem}{'.int8' if int8 else ''}.onnx"
    weights = folder / WEIGHTS_FILE
    if not onnx.is_file() or (weights.is_file() and not _current_onnx(onnx, weights)):
        return None
    return onnx


def open_backend(model: str | Path | None = None, backend: str | None = None, *,
                 num_threads: int | None = None) -> InferenceBackend:
    """The one backend policy of every verb: the model :func:`resolve_model` names, opened.

    ONNX Runtime unless ``backend`` is "pytorch"; a .safetensors model runs through its derived
    ONNX form. With no backend named, a model that cannot be exported is run by PyTorch (with a
    warning) rather than refused.
    """
    path, name = resolve_model(model, backend)
    if name == PyTorchBackend.name:
        return PyTorchBackend(path, num_threads=num_threads)
    if path.suffix.lower() == ".onnx":
        return OnnxRuntimeBackend(path, num_threads=num_threads)
    try:
        return open_derived_onnx(path, num_threads=num_threads)
    except ModelLoadError as error:
        if backend is not None:
            raise
        log.warning("running %s with PyTorch: %s", path, error)
        return PyTorchBackend(path, num_threads=num_threads)
