"""Where the bundled default model lives, and how a missing `--model` resolves to it."""

from __future__ import annotations

from pathlib import Path

from face_emotion.models.store import WEIGHTS_FILE, ModelLoadError

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "default"


def bundled_model_path() -> Path:
    path = BUNDLED_MODEL_DIR / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(
            "this installation has no bundled default model: train one with "
            "`face-emotion train DATA_DIR --out RUN_DIR` and pass --model RUN_DIR"
        )
    return path


def resolve_model_argument(model: str | Path | None) -> Path:
    """A user's --model value, or the bundled default's folder when none was given.

    The folder, not its weights file: it also holds the model's fp32 ONNX form, which is what the
    base install (no torch, so nothing to derive ONNX from) runs.
    """
    if model is not None:
        return Path(model)
    bundled_model_path()  # says clearly when an installation has none
    return BUNDLED_MODEL_DIR


def resolve_init_argument(model: str | Path) -> Path:
    """``train --init`` value: "bundled" names the bundled default model; else a path."""
    return bundled_model_path() if str(model) == "bundled" else Path(model)
