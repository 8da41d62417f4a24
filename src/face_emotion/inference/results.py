"""Result objects: what the Predictor returns, with one `to_dict()` path to JSON."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the (EXIF-upright) input image."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class FacePrediction:
    box: Box
    score: float  # face-detector confidence
    emotion: str
    confidence: float  # probability of `emotion`
    probabilities: dict[str, float]  # every class, temperature applied, sums to 1
    heatmap_png: bytes | None = field(default=None, repr=False)  # Grad-CAM over the box, when asked

    def to_dict(self, *, include_heatmap: bool = True) -> dict:
        data = {
            "box": self.box.to_dict(),
            "score": round(float(self.score), 4),
            "emotion": self.emotion,
            "confidence": round(float(self.confidence), 4),
            "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()},
        }
        if include_heatmap and self.heatmap_png is not None:
            data["heatmap_png"] = base64.b64encode(self.heatmap_png).decode("ascii")
        return data
