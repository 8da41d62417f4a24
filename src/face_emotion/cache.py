"""Where face-emotion keeps what it can make again (face crops, derived ONNX files): one setting."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FACE_EMOTION_CACHE"


def cache_path(kind: str) -> Path:
    """``$FACE_EMOTION_CACHE/<kind>``, else ``~/.cache/face-emotion/<kind>``; read at each call, not at import."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "face-emotion") / kind
