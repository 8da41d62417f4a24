"""The one clip loop: a clip or a live stream -> per-frame results. Decode, detect every few
frames, follow and track faces between detections, classify every analysed frame, smooth each
track's probabilities, and summarise the tracks as the frames go by.

    frames (a VideoSource, or a live source) -> faces (Predictor.detect every detect_interval_s,
    optical flow between) -> track ids (ByteTrack) -> crops (Predictor.crops, or
    Predictor.whole_crop for face crops) -> batch -> probabilities -> smoothing -> FrameResult

:class:`ClipRun` is the loop every caller iterates: `predict` on a clip (CLI), the Python API,
POST /predict/video and `watch` / FaceEmotion.stream for live sources.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image

from face_emotion.errors import FaceEmotionError
from face_emotion.faces.base import Face
from face_emotion.inference.results import FacePrediction, ImageResult
from face_emotion.video.decode import DecodedFrame, VideoLimits, VideoSource
from face_emotion.video.results import FrameResult
from face_emotion.video.smoothing import DEFAULT_SMOOTH_S, ProbabilitySmoother
from face_emotion.video.tracking import DEFAULT_LOST_TRACK_S, FaceFollower, FaceTracker

if TYPE_CHECKING:
    from face_emotion.video.summary import SummaryBuilder, VideoSummary

# Five detections a second: a face entering the picture gets a box within 0.2 s, and optical flow
# over 0.2 s of normal head motion stays on the face. The detector is about 10x the cost of the
# rest of a frame's work, so this is what makes real time possible on two cores
# (benchmarks/video_speed.py).
DEFAULT_DETECT_INTERVAL_S = 0.2
_BATCH_CROPS = 16
_MAX_QUEUED_FRAMES = 32  # bounds the decoded frames held in memory while a batch fills


@dataclass(frozen=True)
class VideoOptions:
    """How to analyse a clip. Every field has the documented default of `face-emotion predict`."""

    sample_fps: float | None = None  # analyse at most this many frames a second; None: every frame
    detect_interval_s: float = DEFAULT_DETECT_INTERVAL_S  # run the face detector at least this often
    smooth_s: float = DEFAULT_SMOOTH_S  # time constant of each track's smoothing; 0: off
    lost_track_s: float = DEFAULT_LOST_TRACK_S  # a face unseen this long comes back under a new id
    # Frames are shrunk to this longest side for the detector: on the two-people test clip (600 px
    # wide) 384 px found every face that full resolution found, in a third of the time. CenterFace
    # finds faces down to about 16 px at this size (27 px in a 640 px wide frame).
    detect_max_side: int | None = 384

    def __post_init__(self) -> None:
        if self.sample_fps is not None and not self.sample_fps > 0:
            raise ValueError(f"sample fps must be above 0, not {self.sample_fps}")
        if not self.detect_interval_s >= 0:
            raise ValueError(f"detect interval must be 0 (every frame) or more seconds, not {self.detect_interval_s}")
        if not self.smooth_s >= 0:
            raise ValueError(f"smoothing must be 0 (off) or more seconds, not {self.smooth_s}")


@dataclass
class StageTimes:
    """Seconds spent per stage, for benchmarks and the CLI's closing line."""

    decode: float = 0.0
    detect: float = 0.0
    follow: float = 0.0
    track: float = 0.0
    crop: float = 0.0
    classify: float = 0.0
    frames_decoded: int = 0
    frames_analysed: int = 0
    detections: int = 0
    extra: dict = field(default_factory=dict)

    def stages(self) -> dict[str, float]:
        return {"decode": self.decode, "detect": self.detect, "follow": self.follow, "track": self.track,
                "crop": self.crop, "classify": self.classify}


@dataclass(frozen=True)
class AnalysedFrame:
    """A decoded frame and its result (None for frames that --sample-fps skips)."""

    decoded: DecodedFrame
    result: FrameResult | None


class VideoAnalyser:
    """Analyses clips with one Predictor (its detector, crops, eval transform and backend)."""

    def __init__(self, predictor, options: VideoOptions | None = None) -> None:
        self.predictor = predictor
        self.options = options or VideoOptions()
        self.times = StageTimes()
        self.model = None if getattr(predictor, "spec", None) is None else str(predictor.spec.name)

    def warm_up(self) -> None:
        """Imports and first runs (tracker, optical flow, detector, model) done now: a live
        source's first frames must not wait seconds for them while the stream runs on."""
        blank = np.full((64, 64, 3), 128, np.uint8)
        FaceTracker(25.0).update([], 0.0)
        FaceFollower().prepare(blank)
        image = Image.fromarray(blank)
        if not self.predictor.whole_image:
            self.predictor.detect(image, max_side=self.options.detect_max_side)
        self.predictor.probabilities(self.predictor.batch([self.predictor.whole_crop(image).crop]))

    def run(self, video, *, path: str | None = None) -> Iterator[AnalysedFrame]:
        """Every decoded frame of an opened source, in order, with a result for each analysed one.

        ``video``: a VideoSource, or any object with ``info`` (VideoInfo) and ``frames()``; one
        whose ``live`` is true gets each frame's result as soon as it is done (no batching across
        frames: a live result must not wait for the frames after it).
        """
        smoother = ProbabilitySmoother(self.options.smooth_s)
        live = bool(getattr(video, "live", False))
        # Frames wait here until enough faces are gathered for one backend call: one batch of 16
        # crops costs about a third of 16 calls of one (measured on both backends).
        queue: list[tuple[DecodedFrame, _Pending | None]] = []
        # The backend runs each batch on a thread of its own while the next batch is prepared
        # (PyTorch and ONNX Runtime release the GIL), so on two cores classification overlaps
        # detection, flow and cropping. One batch in flight keeps results in order, memory bounded.
        classifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-emotion-classify")
        in_flight: deque = deque()

        def flush(keep: int) -> Iterator[AnalysedFrame]:
            if queue:
                in_flight.append((list(queue), self._submit(queue, classifier)))
                queue.clear()
            while len(in_flight) > (0 if live else keep):
                items, probs = in_flight.popleft()
                yield from self._emit(items, *probs.result(), smoother, path)

        try:
            yield from self._analyse(video, queue, flush, live)
            yield from flush(0)
        finally:
            classifier.shutdown(wait=True)

    def _analyse(self, video, queue: list, flush, live: bool) -> Iterator[AnalysedFrame]:
        """Decode, sample, detect or follow, track and crop; ``flush(1)`` hands full batches on."""
        options = self.options
        times = self.times
        predictor = self.predictor
        tracker = FaceTracker(video.info.fps, lost_track_s=options.lost_track_s)
        follower = FaceFollower()
        step = None if options.sample_fps is None else 1.0 / options.sample_fps
        next_sample = 0.0
        last_detection: float | None = None
        prev_grey: tuple[np.ndarray, float] | None = None
        current: list[Face] = []
        queued_crops = 0
        frames = video.frames()
        try:
            while True:
                start = time.perf_counter()
                decoded = next(frames, None)
                times.decode += time.perf_counter() - start
                if decoded is None:
                    break
                times.frames_decoded += 1
                if step is not None:
                    # A small tolerance so 30 fps sampled at 10 takes every third frame despite rounding.
                    if decoded.time_s + 1e-6 < next_sample:
                        queue.append((decoded, None))
                        if live or len(queue) >= _MAX_QUEUED_FRAMES:
                            yield from flush(1)
                            queued_crops = 0
                        continue
                    while next_sample <= decoded.time_s + 1e-6:
                        next_sample += step
                work_start = time.perf_counter()
                image = Image.fromarray(decoded.rgb)
                detect = predictor.whole_image or last_detection is None or prev_grey is None or (
                    decoded.time_s - last_detection >= options.detect_interval_s - 1e-6)
                start = time.perf_counter()
                whole = None
                if predictor.whole_image:  # every frame is one face crop already, taken as images are
                    whole = predictor.whole_crop(image)
                    current = [Face((0, 0, image.width, image.height), 1.0)]
                    grey = None
                elif detect:
                    current = predictor.detect(image, max_side=options.detect_max_side)
                    last_detection = decoded.time_s
                    times.detections += 1
                    times.detect += time.perf_counter() - start
                    start = time.perf_counter()
                    grey = follower.prepare(decoded.rgb)
                    times.follow += time.perf_counter() - start
                else:
                    grey = follower.prepare(decoded.rgb)
                    followed = follower.follow(prev_grey, grey, current, image.size)
                    current = [face for face in followed if face is not None]
                    times.follow += time.perf_counter() - start
                    if len(current) < len(followed):
                        last_detection = None  # a face was lost: look again on the next analysed frame
                prev_grey = grey
                start = time.perf_counter()
                tracked = tracker.update(current, decoded.time_s)
                times.track += time.perf_counter() - start
                start = time.perf_counter()
                if whole is not None:
                    crops = [whole]
                else:
                    crops = predictor.crops(image, [t.face for t in tracked]) if tracked else []
                batch = predictor.batch([c.crop for c in crops]) if crops else None
                times.crop += time.perf_counter() - start
                queue.append((decoded, _Pending(tracked, crops, batch, detect, image.size,
                                                time.perf_counter() - work_start)))
                queued_crops += len(crops)
                times.frames_analysed += 1
                if live or queued_crops >= _BATCH_CROPS or len(queue) >= _MAX_QUEUED_FRAMES:
                    yield from flush(1)
                    queued_crops = 0
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # stops a decoder thread when the caller stops early

    def _submit(self, queue, classifier: ThreadPoolExecutor) -> Future:
        """(probabilities of every face in ``queue``, seconds it took), computing on the classifier thread."""
        batches = [p.batch for _, p in queue if p is not None and p.batch is not None]

        def classify() -> tuple[np.ndarray, float]:
            if not batches:
                return np.empty((0, len(self.predictor.classes))), 0.0
            start = time.perf_counter()
            probs = self.predictor.probabilities(np.concatenate(batches))
            seconds = time.perf_counter() - start
            self.times.classify += seconds
            return probs, seconds

        return classifier.submit(classify)

    def _emit(self, queue, probs: np.ndarray, classify_s: float, smoother: ProbabilitySmoother,
              path: str | None) -> Iterator[AnalysedFrame]:
        """Results in frame order, each track's probabilities smoothed as time goes on."""
        row = 0
        classes = self.predictor.classes
        faces_in_batch = max(1, len(probs))
        for decoded, pending in queue:
            if pending is None:
                yield AnalysedFrame(decoded, None)
                continue
            faces = []
            for tracked, crop in zip(pending.tracked, pending.crops):
                smoothed = smoother.update(tracked.track_id, decoded.time_s, probs[row])
                row += 1
                faces.append((tracked.track_id, FacePrediction.of(crop.box, crop.score, smoothed, classes)))
            # A stable order for readers: by track, new (not yet numbered) faces last.
            faces.sort(key=lambda f: (f[0] is None, f[0] or 0, -f[1].box.area))
            # This frame's own work, and its faces' share of the batch they were classified in.
            elapsed_ms = (pending.work_s + classify_s * len(pending.crops) / faces_in_batch) * 1000.0
            image = ImageResult.of(pending.size, [f for _, f in faces], path=path, model=self.model,
                                   elapsed_ms=elapsed_ms)
            result = FrameResult(decoded.index, decoded.time_s, image, tuple(t for t, _ in faces), pending.detected,
                                 dropped=decoded.dropped)
            yield AnalysedFrame(decoded, result)


@dataclass
class _Pending:
    tracked: list
    crops: list
    batch: np.ndarray | None
    detected: bool
    size: tuple[int, int]  # the frame's width and height
    work_s: float  # detection or following, tracking and cropping of this frame


class AnalysisTimeout(FaceEmotionError, TimeoutError):
    """The analysis passed its deadline and was stopped (what was decoded so far is dropped)."""

    code = "timeout"


class ClipRun:
    """The one clip loop: iterate for every decoded frame (AnalysedFrame, ``result`` None where
    --sample-fps skips it); :meth:`summary` (per track) at any time, :attr:`builder` for timelines.

    ``video``: an opened VideoSource or live source (see :func:`open_clip`). ``deadline``
    (time.monotonic()): AnalysisTimeout once it passes, checked after every frame, so a server
    thread does not go on decoding for a client that was already answered.
    """

    def __init__(self, predictor, video, options: VideoOptions | None = None, *, path: str | None = None,
                 deadline: float | None = None) -> None:
        from face_emotion.video.summary import SummaryBuilder

        self.video = video
        self.info = video.info
        self.path = path
        self.deadline = deadline
        self.analyser = VideoAnalyser(predictor, options)
        self.builder: SummaryBuilder = SummaryBuilder(predictor.classes, path, video.info.to_dict())

    @property
    def times(self) -> StageTimes:
        return self.analyser.times

    def __iter__(self) -> Iterator[AnalysedFrame]:
        for item in self.analyser.run(self.video, path=self.path):
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise AnalysisTimeout(f"the clip's analysis passed its deadline after frame {item.decoded.index}")
            if item.result is not None:
                self.builder.add(item.result)
            yield item

    def results(self) -> Iterator[FrameResult]:
        """The analysed frames' results only."""
        return (item.result for item in self if item.result is not None)

    def summary(self) -> "VideoSummary":
        return self.builder.summary()


class open_clip:  # noqa: N801 - used like open(): `with open_clip(...) as clip`
    """``with open_clip(predictor, source, options) as clip:`` a ClipRun over a clip (a path or
    its bytes, opened as a VideoSource within ``limits``) or an opened live source, closed on exit.

    Raises face_emotion.video.VideoDecodeError (or VideoTooLargeError) for a clip that cannot be
    read or is over ``limits``: header problems on entering, damage further in where it is met.
    """

    def __init__(self, predictor, source, options: VideoOptions | None = None, *, limits: VideoLimits | None = None,
                 path: str | None = None, deadline: float | None = None) -> None:
        if path is None and isinstance(source, (str, Path)):
            path = str(source)
        self.video = source if hasattr(source, "frames") else VideoSource(source, limits)
        self.clip = ClipRun(predictor, self.video, options, path=path, deadline=deadline)

    def __enter__(self) -> ClipRun:
        return self.clip

    def __exit__(self, *exc) -> None:
        self.video.close()


def analyse_video(predictor, source: str | Path | bytes, options: VideoOptions | None = None, *,
                  limits: VideoLimits | None = None, path: str | None = None) -> Iterator[FrameResult]:
    """Per-frame results of a clip (a path or its bytes), analysed frames only, as they are made.

    Raises face_emotion.video.VideoDecodeError (or VideoTooLargeError) for a clip that cannot be
    read or is over ``limits``; header problems are raised before the first frame is decoded,
    damage further in is raised where it is met (after the frames before it were yielded).
    """
    with open_clip(predictor, source, options, limits=limits, path=path) as clip:
        yield from clip.results()


@dataclass(frozen=True)
class ClipAnalysis:
    frames: list[FrameResult]
    summary: "VideoSummary"
    classes: tuple[str, ...] = ()
    model: str | None = None

    def to_dict(self, *, sample_fps: float | None, smooth_s: float, elapsed_ms: float | None = None) -> dict:
        """The answer of POST /predict/video (and of the page's on-device clip analysis, which
        static/tracking.js clipAnswer mirrors): summary, frames, classes, the options, model, time."""
        return {
            "summary": self.summary.to_dict(),
            "frames": [frame.to_dict(in_clip=True) for frame in self.frames],
            "classes": list(self.classes),
            "sample_fps": sample_fps,
            "smooth_s": smooth_s,
            "model": self.model,
            "elapsed_ms": None if elapsed_ms is None else round(float(elapsed_ms), 1),
        }


def analyse_clip(predictor, source: str | Path | bytes, options: VideoOptions | None = None, *,
                 limits: VideoLimits | None = None, path: str | None = None,
                 deadline: float | None = None) -> ClipAnalysis:
    """Every analysed frame's result and the summary of a clip, in one call (``deadline``: see ClipRun)."""
    with open_clip(predictor, source, options, limits=limits, path=path, deadline=deadline) as clip:
        frames = list(clip.results())
        return ClipAnalysis(frames, clip.summary(), tuple(predictor.classes), clip.analyser.model)
