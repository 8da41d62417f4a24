"""What a clip's analysis returns: one FrameResult per analysed frame, with one `to_dict()` path to JSON."""

from __future__ import annotations

from dataclasses import dataclass

from face_emotion.inference.results import FacePrediction


@dataclass(frozen=True)
class TrackedPrediction:
    """A face in one frame: its track and its prediction (probabilities smoothed along the track)."""

    track_id: int | None  # the same number for one person across frames; None on a face's first frame
    prediction: FacePrediction

    def to_dict(self) -> dict:
        return {"track_id": self.track_id, **self.prediction.to_dict(include_heatmap=False)}


@dataclass(frozen=True)
class FrameResult:
    frame: int  # index among the clip's decoded frames, from 0
    time_s: float  # presentation time from the start of the clip
    faces: tuple[TrackedPrediction, ...]  # by track id
    detected: bool  # the face detector ran on this frame (else boxes were followed by optical flow)
    path: str | None = None

    def to_dict(self) -> dict:
        data: dict = {} if self.path is None else {"path": self.path}
        data.update({
            "frame": self.frame,
            "time_s": round(self.time_s, 4),
            "faces": [face.to_dict() for face in self.faces],
            "error": None,
        })
        return data

    def csv_rows(self, classes: tuple[str, ...]) -> list[list]:
        """Rows under :func:`csv_header`: one per face, or one "no face" row for the frame."""
        where = ["" if self.path is None else self.path, self.frame, round(self.time_s, 4)]
        if not self.faces:
            return [[*where, "", *[""] * (8 + len(classes)), "no face", ""]]
        rows = []
        for number, tracked in enumerate(self.faces, 1):
            face, b = tracked.prediction, tracked.prediction.box
            rows.append([*where, "" if tracked.track_id is None else tracked.track_id, number, b.x, b.y, b.width, b.height,
                         round(face.score, 4), face.emotion, round(face.confidence, 6),
                         *(round(face.probabilities[c], 6) for c in classes), "ok", ""])
        return rows


def csv_header(classes: tuple[str, ...]) -> list[str]:
    """Video CSV columns: the image columns (path, face, x, ...) with frame, time_s and track_id
    after path, so an image's row is the same row with those three left empty."""
    return ["path", "frame", "time_s", "track_id", "face", "x", "y", "width", "height", "score", "emotion",
            "confidence", *classes, "status", "error"]


def error_row(path: str, message: str, classes: tuple[str, ...]) -> list:
    return [path, "", "", "", *[""] * (8 + len(classes)), "error", message]
