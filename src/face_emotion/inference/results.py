"""Result objects: a FacePrediction per face (what the Predictor returns) and an ImageResult per
image (faces, image size, error) with one `to_dict()` path to JSON and its CSV, text and annotation."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from PIL import Image


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
    heatmap_png: bytes | None = field(default=None, repr=False)  # explanation over the box, when asked

    @classmethod
    def of(cls, box: Box, score: float, probs, classes: Sequence[str], heatmap_png: bytes | None = None
           ) -> "FacePrediction":
        """The one place a face's answer is made from its probabilities (images and video frames)."""
        top = max(range(len(classes)), key=lambda i: probs[i])
        return cls(box=box, score=float(score), emotion=classes[top], confidence=float(probs[top]),
                   probabilities={name: float(p) for name, p in zip(classes, probs)}, heatmap_png=heatmap_png)

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


@dataclass(frozen=True)
class ResultError:
    """Why an image has no result: a stable machine-readable code and a message for people.

    The same shape everywhere: the CLI's JSON lines and CSV, batch items, and (as the body of a
    4xx) the web API's errors.
    """

    code: str  # e.g. invalid_image, image_too_large, unreadable_file, prediction_failed
    message: str  # what went wrong, complete on its own (callers add no prefix)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


NO_FACE = 0  # the CSV ``face`` of an image's own row: no face found, or an error


def csv_header(classes: tuple[str, ...]) -> list[str]:
    """The columns of :meth:`ImageResult.csv_rows` for a model with these classes."""
    return ["path", "face", "x", "y", "width", "height", "score", "emotion", "confidence", *classes,
            "status", "error"]


@dataclass(frozen=True)
class ImageResult:
    """One image's result: its size and faces (largest first), or the error that stopped it.

    Built once by whoever analysed the image (predict CLI, web API, batch items) and rendered by
    its own methods: :meth:`to_dict` (JSON), :meth:`csv_rows`, :meth:`text_lines` and
    :meth:`annotate`. Faces are numbered from 1 in every rendering but JSON, where they are a list.
    """

    faces: tuple[FacePrediction, ...] = ()
    width: int | None = None  # pixels of the EXIF-upright image; None when it could not be read
    height: int | None = None
    path: str | None = None  # where the image came from, when there is a name to give
    error: ResultError | None = None
    model: str | None = None  # name of the model that answered (set by inference.pipeline.analyse)
    elapsed_ms: float | None = None  # time the analysis took, milliseconds

    @classmethod
    def of(cls, image, faces, *, path: str | None = None, model: str | None = None,
           elapsed_ms: float | None = None) -> "ImageResult":
        """The result of predicting ``faces`` on ``image``: the decoded PIL image, or its (width, height)."""
        width, height = image if isinstance(image, tuple) else image.size
        return cls(faces=tuple(faces), width=int(width), height=int(height), path=path, model=model,
                   elapsed_ms=elapsed_ms)

    @classmethod
    def failed(cls, code: str, message: str, *, path: str | None = None, model: str | None = None,
               elapsed_ms: float | None = None) -> "ImageResult":
        return cls(path=path, error=ResultError(code, message), model=model, elapsed_ms=elapsed_ms)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def largest(self) -> FacePrediction | None:
        return self.faces[0] if self.faces else None

    @property
    def emotion(self) -> str | None:
        """The largest face's emotion (None without faces), as in :meth:`to_dict`."""
        return self.largest.emotion if self.faces else None

    @property
    def confidence(self) -> float | None:
        return float(self.largest.confidence) if self.faces else None

    def to_dict(self, *, include_heatmap: bool = True) -> dict:
        """JSON-ready: {"path"?, "emotion", "confidence", "faces", "image", "error", "model"?,
        "elapsed_ms"?}: exactly what `predict --json` prints for the image.

        ``emotion``/``confidence`` are the largest face's (null without faces), ``image`` is
        {"width", "height"} (null when the image could not be read), ``error`` is
        {"code", "message"} or null. ``path``, ``model`` and ``elapsed_ms`` are there when the
        result has them (inference.pipeline.analyse sets the last two).
        """
        largest = self.largest
        data: dict = {} if self.path is None else {"path": self.path}
        data.update({
            "emotion": largest.emotion if largest else None,
            "confidence": round(float(largest.confidence), 4) if largest else None,
            "faces": [face.to_dict(include_heatmap=include_heatmap) for face in self.faces],
            "image": None if self.width is None else {"width": self.width, "height": self.height},
            "error": None if self.error is None else self.error.to_dict(),
        })
        if self.model is not None:
            data["model"] = self.model
        if self.elapsed_ms is not None:
            data["elapsed_ms"] = round(float(self.elapsed_ms), 1)
        return data

    def rows(self, classes: Sequence[str]) -> list[dict]:
        """The one table shape of a result, unrounded: a dict per face (``face`` numbered from 1),
        else one for the image with the face fields None. Keys: path, image_width, image_height,
        face, x, y, width, height, score, emotion, confidence, one per class, status ("ok", "no
        face", "error"), error_code, error. CSV (:meth:`csv_rows`) and Parquet (batch) both read it."""
        head = {"path": self.path, "image_width": self.width, "image_height": self.height}
        error = {"error_code": None if self.error is None else self.error.code,
                 "error": None if self.error is None else self.error.message}
        if not self.faces:
            blank = dict.fromkeys(("face", "x", "y", "width", "height", "score", "emotion", "confidence", *classes))
            return [{**head, **blank, "status": "error" if self.error is not None else "no face", **error}]
        return [{**head, "face": number, "x": face.box.x, "y": face.box.y, "width": face.box.width,
                 "height": face.box.height, "score": face.score, "emotion": face.emotion,
                 "confidence": face.confidence, **{c: face.probabilities[c] for c in classes},
                 "status": "ok", **error}
                for number, face in enumerate(self.faces, 1)]

    def csv_rows(self, classes: tuple[str, ...]) -> list[list]:
        """Rows under :func:`csv_header`, from :meth:`rows`: ``face`` is 0 on an image's own row
        (never blank: a blank turns the column into floats in pandas and R), numbers rounded."""
        digits = {"score": 4, "confidence": 6, **{c: 6 for c in classes}}
        out = []
        for row in self.rows(classes):
            row = {**row, "face": NO_FACE if row["face"] is None else row["face"]}
            out.append(["" if row[k] is None else round(row[k], digits[k]) if k in digits else row[k]
                        for k in csv_header(classes)])
        return out

    def text_lines(self) -> list[str]:
        """For people: a line for the image, then one per face (numbered from 1)."""
        name = "image" if self.path is None else self.path
        if self.error is not None:
            return [f"{name}: error: {self.error.message}"]
        if not self.faces:
            return [f"{name}: no face found"]
        lines = [f"{name}: {plural(len(self.faces), 'face')}"]
        for number, face in enumerate(self.faces, 1):
            b = face.box
            ranked = sorted(face.probabilities.items(), key=lambda kv: kv[1], reverse=True)
            runner_up = f", then {ranked[1][0]} {ranked[1][1]:.2f}" if len(ranked) > 1 else ""
            lines.append(
                f"  face {number} at x={b.x} y={b.y} {b.width}x{b.height} (detector score {face.score:.2f}): "
                f"{face.emotion} {face.confidence:.2f}{runner_up}"
            )
        return lines

    def annotate(self, image):
        """A copy of ``image`` (the one analysed) with each face's box and "N emotion confidence"."""
        labels = [(face.box, f"{number} {face.emotion} {face.confidence:.2f}", ANNOTATION_COLOUR)
                  for number, face in enumerate(self.faces, 1)]
        return draw_labelled_boxes(image.copy(), labels)


ANNOTATION_COLOUR = (255, 210, 0)


def draw_labelled_boxes(image, labels) -> "Image.Image":
    """Draws on ``image`` (and returns it) each (Box, text, RGB colour): the box outlined and the
    text on a patch of its colour. Shared by images (ImageResult.annotate) and video frames."""
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(image)
    scale = max(image.size) / 640
    line = max(2, round(2 * scale))
    font = ImageFont.load_default(size=max(12, round(16 * scale)))
    for b, label, colour in labels:
        draw.rectangle([b.x, b.y, b.x + b.width - 1, b.y + b.height - 1], outline=colour, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_w, text_h = right - left, bottom - top
        pad = max(2, line)
        label_w, label_h = text_w + 2 * pad, text_h + 2 * pad
        # Above the box when there is room, inside its top edge otherwise; moved left (or up) as
        # far as needed to stay whole on the image, for faces at the right or bottom edge.
        y0 = b.y - label_h if b.y - label_h >= 0 else b.y
        x0 = max(0, min(b.x, image.width - label_w - 1))
        y0 = max(0, min(y0, image.height - label_h - 1))
        draw.rectangle([x0, y0, x0 + label_w, y0 + label_h], fill=colour)
        draw.text((x0 + pad - left, y0 + pad - top), label, fill=(0, 0, 0), font=font)
    return image


def plural(count: int, noun: str) -> str:
    """"1 face", "2 faces", "0 faces"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
