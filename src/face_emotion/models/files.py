"""The model-file layer: what a model argument names, and what a model file says about itself.

    resolve_model(model, formats)   a model argument -> the file to open (the one resolver)
    file_sha256(path)               the checksum that names derived files and links them to a source
    ONNX_* keys, onnx_metadata      what an exported .onnx file carries beside its graph
    onnx_is_current(onnx, weights)  whether a run folder's model.onnx still matches its weights

A model argument is None or "bundled" (the bundled model), a run folder, a ``.safetensors`` file
or a ``.onnx`` file. Pickles are refused here by their name, before anything reads them: opening
the file the resolver names is the job of models.store (weights) and inference.backends (runtimes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from face_emotion.errors import FaceEmotionError

if TYPE_CHECKING:
    from face_emotion.models.spec import ModelSpec

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
SPEC_METADATA_KEY = "face_emotion_spec"
# The formats a model file may have, in the words of their suffixes.
SAFETENSORS, ONNX = ".safetensors", ".onnx"
MODEL_FORMATS = (SAFETENSORS, ONNX)
# The model argument that names the bundled default model (also what None means).
BUNDLED = "bundled"
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "default"

# What torch.save, Lightning checkpoints and pickle write: unpickling runs whatever code the file's
# author put in it, so a file named like one is refused by its name before anything reads it.
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar"})

# ONNX metadata_props keys, written by inference.export and read by the ONNX Runtime backend. The
# spec is under the same key as in the safetensors header, so both formats carry one description.
ONNX_SPEC_KEY = SPEC_METADATA_KEY
ONNX_CLASSES_KEY = "class_names"  # JSON list, for consumers that do not know the spec format
ONNX_PREPROCESS_KEY = "preprocess"  # JSON object, likewise
ONNX_SOURCE_SHA256_KEY = "face_emotion_source_sha256"  # sha256 of the .safetensors exported from
ONNX_QUANTIZATION_KEY = "face_emotion_quantization"  # "none", or how the int8 model was made
ONNX_INPUT_NAME = "input"
ONNX_OUTPUT_NAME = "logits"


class ModelLoadError(FaceEmotionError, RuntimeError):
    """A model file is missing, truncated, tampered with, or not a face-emotion model."""

    code = "model_unavailable"


def refuse_pickle(path: Path) -> None:
    """ModelLoadError when ``path`` is named like a pickle (.pt, .ckpt, ...): such files are never loaded."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{path} is a pickle file ({suffix}), which face-emotion never loads: unpickling can run any code "
            f"in it. Pass a run folder or its model.safetensors (written by `face-emotion train`), or a .onnx "
            f"file from `face-emotion export`"
        )


def no_model_error(path: Path, looked_for: str | None = None) -> ModelLoadError:
    """The one "no model at ..." message, with how to get a model."""
    missing = f" (no {looked_for})" if looked_for else ""
    return ModelLoadError(f"no model at {path}{missing}: train one with `face-emotion train DATA_DIR --out RUN_DIR` "
                          f"and pass --model RUN_DIR")


def bundled_model_path() -> Path:
    """The bundled default model's weights; ModelLoadError when this installation has none."""
    path = BUNDLED_MODEL_DIR / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(
            "this installation has no bundled default model: train one with "
            "`face-emotion train DATA_DIR --out RUN_DIR` and pass --model RUN_DIR"
        )
    return path


def resolve_model(model: str | Path | None = None, formats: Sequence[str] = (SAFETENSORS,)) -> Path:
    """A model argument -> the model file to open; the one resolver of every verb.

    ``model``: None or "bundled" (the bundled model's folder), a run folder, or a model file.
    ``formats``: the suffixes the caller can open, in order of preference. A run folder gives its
    ``model<suffix>`` for the first suffix present, except that a ``model.onnx`` exported from other
    weights than those beside it (a stale one) is passed over for those weights. A file is taken
    as named. Raises ModelLoadError: a pickle (refused by name, never read), a missing model,
    a format that is no model format.
    """
    if model is None or str(model) == BUNDLED:
        # The folder, not its weights file: it also holds the model's ONNX forms, which the base
        # install (no torch, so nothing to derive ONNX from) runs.
        bundled_model_path()  # says clearly when an installation has none
        return _from_run_folder(BUNDLED_MODEL_DIR, formats)
    path = Path(model)
    if path.is_dir():
        return _from_run_folder(path, formats)
    refuse_pickle(path)
    if not path.is_file():
        raise no_model_error(path)
    if path.suffix.lower() not in MODEL_FORMATS:
        raise ModelLoadError(f"{path}: unknown model format {path.suffix.lower()!r}; "
                             f"expected one of {sorted(MODEL_FORMATS)}")
    return path


def _from_run_folder(folder: Path, formats: Sequence[str]) -> Path:
    stem = Path(WEIGHTS_FILE).stem
    candidates = [folder / f"{stem}{suffix}" for suffix in formats]
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is None:
        raise no_model_error(folder, " or ".join(c.name for c in candidates))
    weights = folder / WEIGHTS_FILE
    if found.suffix == ONNX and SAFETENSORS in formats and weights.is_file() and not onnx_is_current(found, weights):
        return weights  # a stale model.onnx beside newer weights: the weights are the model
    return found


def shipped_onnx(model: str | Path | None = None, *, int8: bool = False) -> Path | None:
    """The ONNX form a model folder already holds (``model.onnx``, or ``model.int8.onnx`` with
    ``int8``), when it was made from the folder's weights as they are now; None otherwise.

    The bundled model ships both, so the base install (no torch) exports and serves it as it is.
    """
    if model is None or str(model) == BUNDLED:
        bundled_model_path()
        model = BUNDLED_MODEL_DIR
    folder = Path(model)
    if not folder.is_dir():
        return None
    onnx = folder / f"{Path(WEIGHTS_FILE).stem}{'.int8' if int8 else ''}{ONNX}"
    weights = folder / WEIGHTS_FILE
    if not onnx.is_file() or (weights.is_file() and not onnx_is_current(onnx, weights)):
        return None
    return onnx


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_metadata(spec: ModelSpec, source_sha256: str, quantization: str) -> dict[str, str]:
    """The metadata_props an exported ONNX file carries: its description and where it came from."""
    return {
        ONNX_SPEC_KEY: spec.to_json(),
        ONNX_CLASSES_KEY: json.dumps(list(spec.classes)),
        ONNX_PREPROCESS_KEY: json.dumps(asdict(spec.preprocess), sort_keys=True),
        ONNX_SOURCE_SHA256_KEY: source_sha256,
        ONNX_QUANTIZATION_KEY: quantization,
    }


def onnx_is_current(onnx: Path, weights: Path) -> bool:
    """Whether ``onnx`` was exported from ``weights`` as they are now (a run folder may hold a stale one).

    A file that records no source, or that cannot be read, counts as current: the backend that
    opens it says what is wrong with it.
    """
    try:
        import onnx as onnx_lib  # reads the metadata without building a session

        props = {p.key: p.value for p in onnx_lib.load(str(onnx), load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001 - unreadable: OnnxRuntimeBackend will say why if it is chosen
        return True
    expected = props.get(ONNX_SOURCE_SHA256_KEY)
    return expected is None or expected == file_sha256(weights)
