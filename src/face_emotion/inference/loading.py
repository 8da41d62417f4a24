"""The one backend policy of every verb: a model argument -> the file to run and the backend that runs it.

    model argument --models.files.resolve_model--> model file --open_backend--> InferenceBackend

ONNX Runtime unless the PyTorch backend is asked for: a ``.onnx`` file runs as it is, a
``.safetensors`` file through its derived ONNX form (inference.onnx_cache).
"""

from __future__ import annotations

import logging
from pathlib import Path

from face_emotion.errors import UnknownNameError
from face_emotion.inference.backends import (
    DEFAULT_BACKEND,
    InferenceBackend,
    OnnxRuntimeBackend,
    PyTorchBackend,
    backend_names,
)
from face_emotion.inference.onnx_cache import open_derived_onnx
from face_emotion.models.files import ONNX, SAFETENSORS, ModelLoadError, resolve_model

log = logging.getLogger(__name__)


def choose_backend(model: str | Path | None = None, backend: str | None = None) -> tuple[Path, str]:
    """(the model file to open, the name of the backend that runs it), opening nothing.

    ``model``: see models.files.resolve_model (None: the bundled model). ``backend``: None or
    "onnxruntime" (the default): a .onnx file as it is, else the .safetensors file, to be run
    through its derived ONNX form; a run folder's own model.onnx is taken when it was exported
    from the folder's weights as they are now. "pytorch": the .safetensors file. Raises
    ModelLoadError (missing, a pickle, an unknown format) and UnknownNameError.
    """
    if backend is not None and backend not in backend_names():
        raise UnknownNameError(f"unknown backend {backend!r}; choose one of {', '.join(backend_names())}")
    wanted = backend or DEFAULT_BACKEND
    pytorch = wanted == PyTorchBackend.name
    path = resolve_model(model, (SAFETENSORS, ONNX) if pytorch else (ONNX, SAFETENSORS))
    if pytorch and path.suffix.lower() != SAFETENSORS:
        raise ModelLoadError(f"{path} is an ONNX model; the pytorch backend reads .safetensors files "
                             f"(pass the run folder or its model.safetensors)")
    return path, wanted


def open_backend(model: str | Path | None = None, backend: str | None = None, *,
                 num_threads: int | None = None) -> InferenceBackend:
    """The model :func:`choose_backend` names, opened.

    With no backend named, a model that cannot be exported is run by PyTorch (with a warning)
    rather than refused.
    """
    path, name = choose_backend(model, backend)
    if name == PyTorchBackend.name:
        return PyTorchBackend(path, num_threads=num_threads)
    if path.suffix.lower() == ONNX:
        return OnnxRuntimeBackend(path, num_threads=num_threads)
    try:
        return open_derived_onnx(path, num_threads=num_threads)
    except ModelLoadError as error:
        if backend is not None:
            raise
        log.warning("running %s with PyTorch: %s", path, error)
        return PyTorchBackend(path, num_threads=num_threads)
