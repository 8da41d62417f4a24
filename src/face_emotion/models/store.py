"""Save and load models as safetensors + their spec, never unpickling anything.

A model is ``model.safetensors`` whose header metadata holds the JSON spec (so the one file is
enough), with a readable copy as ``model.json`` beside it. A path may name the file, a run folder
that holds it, or "bundled" (models.files.resolve_model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from face_emotion.models.files import SPEC_FILE, SPEC_METADATA_KEY, WEIGHTS_FILE, ModelLoadError, resolve_model
from face_emotion.models.spec import ModelSpec

if TYPE_CHECKING:  # torch is imported where weights are touched: reading a spec must stay cheap
    import torch
    from torch import nn

def save_model(model: nn.Module, spec: ModelSpec, out_dir: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write ``model.safetensors`` (+ ``model.json``) into ``out_dir``; ``dtype`` e.g. fp16 to halve size."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous()
    path = out_dir / WEIGHTS_FILE
    save_file(state, str(path), metadata={SPEC_METADATA_KEY: spec.to_json()})
    # safetensors writes 0600; a model file follows the umask like every other run file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    (out_dir / SPEC_FILE).write_text(spec.to_json() + "\n")
    return path


def read_spec(path: str | Path) -> ModelSpec:
    """Read only the spec of a model file (cheap: the safetensors header)."""
    from safetensors import safe_open

    path = resolve_model(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:  # numpy: reading a header needs no torch
            metadata = handle.metadata() or {}
    except Exception as error:
        raise ModelLoadError(f"{path} is not a readable safetensors model (truncated or tampered?): {error}") from None
    if SPEC_METADATA_KEY not in metadata:
        raise ModelLoadError(f"{path} holds weights but no face-emotion description; "
                             f"it was not written by face-emotion")
    try:
        return ModelSpec.from_dict(json.loads(metadata[SPEC_METADATA_KEY]))
    except (ValueError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path}: bad model description: {error}") from None


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Load a model in eval mode, fp32, with its spec. Refuses files that do not match their spec."""
    import torch
    from safetensors.torch import load_file

    from face_emotion.models.backbones import create_network

    path = resolve_model(path)
    spec = read_spec(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as error:
        raise ModelLoadError(f"{path} cannot be read (truncated or tampered?): {error}") from None
    try:
        model = create_network(spec.architecture, len(spec.classes), spec.dropout, weights=None)
    except ValueError as error:
        raise ModelLoadError(f"{path}: {error}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelLoadError(f"{path}: weights do not match the described {spec.architecture}: {error}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelLoadError(f"{path}: weights contain NaN or infinity (e.g. {bad[:2]}); the file is damaged")
    return model.eval().to(device), spec
