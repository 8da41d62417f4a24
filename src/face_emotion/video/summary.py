"""Per-track and per-clip summaries of a clip's frame results, built as the frames stream by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from face_emotion.video.results import FrameResult


@dataclass
class TrackSeries:
    """One track's smoothed probabilities over time: what the summary and the timeline are made of."""

    track_id: int
    times_s: list[float] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class TrackSummary:
    track_id: int
    first_s: float
    last_s: float
    frames: int  # analysed frames in which this face was seen
    dominant_emotion: str  # the label it carried in the most frames
    share: dict[str, float]  # emotion -> share of its frames with that label (every class)
    mean_probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "track_id": self.track_id,
            "first_s": round(self.first_s, 3),
            "last_s": round(self.last_s, 3),
            "frames": self.frames,
            "dominant_emotion": self.dominant_emotion,
            "share": {k: round(v, 4) for k, v in self.share.items()},
            "mean_probabilities": {k: round(v, 6) for k, v in self.mean_probabilities.items()},
        }


@dataclass(frozen=True)
class VideoSummary:
    path: str | None
    classes: tuple[str, ...]
    frames_analysed: int
    duration_s: float  # time of the last analysed frame
    tracks: tuple[TrackSummary, ...]
    dominant_emotion: str | None  # the label of the most face-frames over all tracks; None: no face
    info: dict | None = None  # the clip's VideoInfo.to_dict(), when known

    def to_dict(self) -> dict:
        data: dict = {} if self.path is None else {"path": self.path}
        data.update({
            "frames_analysed": self.frames_analysed,
            "duration_s": round(self.duration_s, 3),
            "video": self.info,
            "dominant_emotion": self.dominant_emotion,
            "tracks": [t.to_dict() for t in self.tracks],
        })
        return data


class SummaryBuilder:
    """Feed FrameResults with :meth:`add`; :meth:`summary` and :attr:`series` at any time."""

    def __init__(self, classes: tuple[str, ...], path: str | None = None, info: dict | None = None) -> None:
        self.classes = tuple(classes)
        self.path = path
        self.info = info
        self.series: dict[int, TrackSeries] = {}
        self.frames_analysed = 0
        self.last_time_s = 0.0

    def add(self, frame: FrameResult) -> None:
        self.frames_analysed += 1
        self.last_time_s = max(self.last_time_s, frame.time_s)
        for tracked in frame.faces:
            if tracked.track_id is None:
                continue  # a face's first frame, before the tracker numbered it
            series = self.series.setdefault(tracked.track_id, TrackSeries(tracked.track_id))
            series.times_s.append(frame.time_s)
            series.probs.append(np.array([tracked.prediction.probabilities[c] for c in self.classes]))

    def summary(self) -> VideoSummary:
        tracks = []
        label_frames = np.zeros(len(self.classes))
        for track_id in sorted(self.series):
            series = self.series[track_id]
            probs = np.stack(series.probs)
            counts = np.bincount(probs.argmax(axis=1), minlength=len(self.classes)).astype(float)
            label_frames += counts
            mean = probs.mean(axis=0)
            # Ties in frame counts go to the higher mean probability.
            dominant = max(range(len(self.classes)), key=lambda i: (counts[i], mean[i]))
            tracks.append(TrackSummary(
                track_id=track_id, first_s=series.times_s[0], last_s=series.times_s[-1], frames=len(series.times_s),
                dominant_emotion=self.classes[dominant],
                share={c: float(n / len(probs)) for c, n in zip(self.classes, counts)},
                mean_probabilities={c: float(p) for c, p in zip(self.classes, mean)},
            ))
        clip_dominant = self.classes[int(label_frames.argmax())] if label_frames.sum() > 0 else None
        return VideoSummary(self.path, self.classes, self.frames_analysed, self.last_time_s, tuple(tracks),
                            clip_dominant, self.info)


def summarise(frames: Iterable[FrameResult], classes: tuple[str, ...], *, path: str | None = None) -> VideoSummary:
    """The summary of a clip's frame results (e.g. from analyse_video)."""
    builder = SummaryBuilder(classes, path)
    for frame in frames:
        builder.add(frame)
    return builder.summary()
