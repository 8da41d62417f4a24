"""Annotated copies of clips: every frame with its faces' boxes, track numbers and labels, as
H.264 in MP4 (yuv420p, moov atom first) so that Chromium, Firefox and Safari play it directly."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from face_emotion.inference.results import ANNOTATION_COLOUR, draw_labelled_boxes
from face_emotion.video.results import FrameResult

# Colour per track number (cycled), light enough for black label text.
TRACK_COLOURS = (ANNOTATION_COLOUR, (62, 193, 255), (255, 120, 180), (120, 230, 120), (255, 160, 60), (190, 150, 255))


def track_colour(track_id: int | None) -> tuple[int, int, int]:
    return (200, 200, 200) if track_id is None else TRACK_COLOURS[(track_id - 1) % len(TRACK_COLOURS)]


def draw_frame(image: Image.Image, result: FrameResult | None) -> Image.Image:
    """``image`` (drawn on and returned) with each face's box and "N emotion 0.87", N its track."""
    if result is None:
        return image
    labels = []
    for tracked in result.faces:
        face = tracked.prediction
        number = "" if tracked.track_id is None else f"{tracked.track_id} "
        labels.append((face.box, f"{number}{face.emotion} {face.confidence:.2f}", track_colour(tracked.track_id)))
    return draw_labelled_boxes(image, labels)


class AnnotatedVideoWriter:
    """Writes frames to ``target`` (.mp4) through a temporary file that is renamed when
    :meth:`close` succeeds and deleted by :meth:`abort`, so a failed clip leaves nothing behind."""

    def __init__(self, target: Path, width: int, height: int, fps: float) -> None:
        import av

        self.target = Path(target)
        self._partial = self.target.with_name(f".{self.target.name}.partial")
        # yuv420p needs even sizes; the odd last row/column is dropped rather than scaling.
        self.width, self.height = width - width % 2, height - height % 2
        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(25)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._partial), mode="w", format="mp4",
                                  options={"movflags": "+faststart"})
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        # veryfast: encoding stays a small share of the run; crf 23 is x264's default quality.
        self._stream.options = {"preset": "veryfast", "crf": "23"}
        self._stream.time_base = Fraction(1, 1000) if rate.denominator == 1 else 1 / rate
        self._first_time: float | None = None
        self._last_pts = -1

    def write(self, rgb: np.ndarray, time_s: float) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        if self._first_time is None:
            self._first_time = time_s
        pts = int(round((time_s - self._first_time) / float(self._stream.time_base)))
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the source's timestamps
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = self._stream.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        os.replace(self._partial, self.target)
        return self.target

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # already broken: the file goes anyway
            pass
        self._partial.unlink(missing_ok=True)
