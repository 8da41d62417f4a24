"""Inference backends: a float32 NCHW batch -> logits, from a model file that is already chosen.

A backend is a small object satisfying :class:`InferenceBackend`; :data:`BACKENDS` maps a model
file's suffix to the class that opens it, so a new runtime is a new class plus one registry entry.
Backends return *logits*: temperature and :func:`softmax` are applied once, by the Predictor, so
every backend yields the same probabilities for the same logits.

Both formats describe themselves (the ModelSpec JSON rides in the safetensors header or in the
ONNX ``metadata_props``, models.files), and neither is ever unpickled. Which file and which backend
a model argument means is decided above this module (inference.loading).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import numpy as np

from face_emotion.models.files import ONNX_QUANTIZATION_KEY, ONNX_SPEC_KEY, ModelLoadError, no_model_error
from face_emotion.models.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


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


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, in float64 so rows sum to 1 to ~1e-15."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


class PyTorchBackend:
    """A ``.safetensors`` model (models.store) run by eager PyTorch on the CPU."""

    name = "pytorch"

    def __init__(self, path: str | Path, *, num_threads: int | None = None) -> None:
        import torch

        from face_emotion.models.store import load_model

        self.path = Path(path)
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
            raise ModelLoadError(f"{self.path} is not a readable ONNX model (truncated or tampered?): "
                                 f"{error}") from None
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
            raise ModelLoadError(f"{self.path}: expected one input and one output, "
                                 f"found {len(inputs)} and {len(outputs)}")
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
