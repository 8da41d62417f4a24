"""What a model is: the self-description every model file carries.

Like timm's pretrained_cfg, the spec holds everything needed to preprocess an input and read the
output (architecture, classes, image size, colour mode, normalisation, face margin, temperature),
so predict, evaluate, export and serve never retype a preprocessing constant.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from face_emotion.errors import InvalidArgumentError

FORMAT_VERSION = 1
ALIGN_MODES = ("none", "eyes", "landmarks")  # PreprocessSpec.face_align (faces.crop.crop_geometry)
# A model file lists its training images by the first hex digits of their SHA-256, so `evaluate`
# can warn when it is handed them (48 bits: no accidental match in any real dataset).
TRAIN_DIGEST_CHARS = 12
# Model files that predate the face_margin field were trained on crops with a quarter-face margin.
LEGACY_FACE_MARGIN = 0.25


@dataclass(frozen=True)
class PreprocessSpec:
    image_size: int = 224  # pixels, square model input
    color_mode: str = "rgb"  # "rgb" or "grayscale" (grey replicated to three channels)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Fraction of the face size added on each side before cropping: none, since the landmark
    # template already frames brow to chin (the context a model sees is the template's).
    face_margin: float = 0.0
    # How a detected face becomes the crop (faces.crop.crop_geometry): "landmarks" fits the
    # canonical five-point face, "eyes" levels the eyes in the box's square, "none" is the box.
    face_align: str = "landmarks"
    # Detail level: the crop is first brought to this many pixels a side (antialiased), then to
    # image_size. Training crops are mostly small (FER2013 faces are about 40 px, AffectNet's 60)
    # and so reach the model soft; a sharp 400 px face from a phone photo, merely shrunk to
    # image_size, carries detail the model never saw in training. None: no such step.
    face_resolution: int | None = None

    def __post_init__(self) -> None:
        if self.color_mode not in ("rgb", "grayscale"):
            raise InvalidArgumentError(f"color_mode must be 'rgb' or 'grayscale', not {self.color_mode!r}")
        if self.face_align not in ALIGN_MODES:
            raise InvalidArgumentError(f"face_align must be one of {', '.join(ALIGN_MODES)}, not {self.face_align!r}")
        if self.face_resolution is not None and not 8 <= int(self.face_resolution) <= 1024:
            raise InvalidArgumentError(f"face_resolution must be between 8 and 1024 pixels or None, "
                                       f"not {self.face_resolution}")
        if not 16 <= int(self.image_size) <= 1024:
            raise InvalidArgumentError(f"image_size must be between 16 and 1024 pixels, not {self.image_size}")


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    classes: tuple[str, ...]
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    dropout: float = 0.5
    temperature: float = 1.0  # logits are divided by this before softmax (fitted on validation)
    name: str = "face-emotion"
    version: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict):
            raise ValueError("model description is not a JSON object")
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"model format {version} is newer than this face-emotion understands ({FORMAT_VERSION}); upgrade"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["classes"] = tuple(str(c) for c in values["classes"])
            pre = dict(values.get("preprocess") or {})
            # Files written before face_align existed were served with eye-levelled box crops.
            pre.setdefault("face_align", "eyes")
            pre.setdefault("face_margin", LEGACY_FACE_MARGIN)
            pre = {k: v for k, v in pre.items() if k in {f.name for f in dataclasses.fields(PreprocessSpec)}}
            for key in ("mean", "std"):
                if key in pre:
                    pre[key] = tuple(float(x) for x in pre[key])
            values["preprocess"] = PreprocessSpec(**pre)
            return cls(**values)
        except (KeyError, TypeError) as error:
            raise ValueError(f"model description is incomplete or malformed: {error}") from None

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)
