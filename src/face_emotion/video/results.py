"""What a clip's analysis returns: one FrameResult per analysed frame.

A frame's faces are an ImageResult (inference/results.py), the same object images get, so JSON,
CSV and drawing stay one code path; the frame adds its index, its time and a track id per face.
"""

from __future__ import annotations

from dataclasses import dataclass

from face_emotion.inference.results import FacePrediction, ImageResult


@dataclass(frozen=True)
class TrackedPrediction:
    """A face in one frame: its track and its prediction (probabilities smoothed along the track)."""

    track_id: int | None  # the same number for one person across frames; None on a face's first frame
    prediction: FacePrediction


@dataclass(frozen=True)
class FrameResult:
    frame: int  # index among the clip's decoded frames, from 0
    time_s: float  # presentation time from the start of the clip (of the stream, for live sources)
    image: ImageResult  # the frame's faces (by track id), size, path, model and analysis time
    track_ids: tuple[int | None, ...]  # one per face of ``image``
    detected: bool  # the face detector ran on this frame (else boxes were followed by optical flow)
    # Live sources only (None for clips): frame decoded to result written, and frames skipped so far.
    latency_ms: float | None = None
    dropped: int | None = None

    @property
    def faces(self) -> tuple[TrackedPrediction, ...]:
        return tuple(TrackedPrediction(t, f) for t, f in zip(self.track_ids, self.image.faces))

    @property
    def path(self) -> str | None:
        return self.image.path

    def to_dict(self, *, in_clip: bool = False) -> dict:
        """What `predict --json` prints for the frame: ImageResult.to_dict() with "frame" and
        "time_s" after "path", "track_id" first in each face, and for live sources "latency_ms"
        and "dropped" last. ``in_clip``: the entry of a clip answer's "frames" list (ClipAnalysis),
        without what the answer says once (path, image, model) or leaves out (error, elapsed_ms)."""
        data = self.image.to_dict(include_heatmap=False)
        for face, track_id in zip(data["faces"], self.track_ids):
            face["track_id"] = track_id
            face.update({k: face.pop(k) for k in list(face) if k != "track_id"})  # track_id first
        head = {"path": data.pop("path")} if "path" in data else {}
        data = {**head, "frame": self.frame, "time_s": round(self.time_s, 4), **data}
        if self.latency_ms is not None:
            data["latency_ms"] = round(float(self.latency_ms), 1)
        if self.dropped is not None:
            data["dropped"] = int(self.dropped)
        if in_clip:
            for key in ("path", "image", "error", "model", "elapsed_ms"):
                data.pop(key, None)
        return data

    @staticmethod
    def failed_dict(result: ImageResult) -> dict:
        """The JSON line of a clip that could not be read: the failed ImageResult, frame and time null."""
        data = result.to_dict(include_heatmap=False)
        head = {"path": data.pop("path")} if "path" in data else {}
        return {**head, "frame": None, "time_s": None, **data}

    def csv_rows(self, classes: tuple[str, ...]) -> list[list]:
        """ImageResult's rows with frame, time_s and track_id after path (see :func:`csv_header`)."""
        rows = self.image.csv_rows(classes)
        ids = self.track_ids if self.track_ids else ("",)
        return [[row[0], self.frame, round(self.time_s, 4), "" if t is None else t, *row[1:]]
                for row, t in zip(rows, ids)]


def csv_header(classes: tuple[str, ...]) -> list[str]:
    """Video CSV columns: the image columns (path, face, x, ...) with frame, time_s and track_id
    after path, so an image's row is the same row with those three left empty."""
    from face_emotion.inference.results import csv_header as image_header

    first, *rest = image_header(classes)
    return [first, "frame", "time_s", "track_id", *rest]


def error_rows(path: str, code: str, message: str, classes: tuple[str, ...]) -> list[list]:
    return [[row[0], "", "", "", *row[1:]] for row in ImageResult.failed(code, message, path=path).csv_rows(classes)]
