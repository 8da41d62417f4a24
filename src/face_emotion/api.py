"""The Python API: one object that opens a model once and answers for any input.

    from face_emotion import FaceEmotion

    model = FaceEmotion()                       # the bundled model; or FaceEmotion("runs/exp1")
    result = model.predict("photo.jpg")         # also bytes, a PIL image or an RGB array
    print(result.emotion, result.to_dict())     # the ImageResult `face-emotion predict` prints
    clip = model.predict("clip.mp4")            # a video: ClipAnalysis (.frames, .summary)
    for frame in model.stream(0):               # a camera, an rtsp/http(s)/udp/tcp URL, or a file
        print(frame.time_s, frame.latency_ms, [(f.track_id, f.prediction.emotion) for f in frame.faces])

It is the CLI's own path (Predictor.load, then inference.pipeline.analyse for images and
video.analyse_clip for clips), so the same input gives the same answer everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from face_emotion.inference.pipeline import Source
    from face_emotion.inference.results import ImageResult
    from face_emotion.video import ClipAnalysis
    from face_emotion.video.stream import LiveStream


class FaceEmotion:
    """A facial-emotion model ready to predict.

    ``model``: a run folder, a .safetensors or a .onnx file; None: the bundled model.
    ``detector``: a face detector name (None: the default; "none": inputs are face crops already).
    ``backend``: None (ONNX Runtime) or "pytorch". ``tta``: average each face with its mirror
    image. ``num_threads``: CPU threads (None: every CPU available). Errors in opening the model
    raise face_emotion.errors.FaceEmotionError (with ``code`` and ``message``).
    """

    def __init__(self, model: str | Path | None = None, *, detector: Any = None, backend: str | None = None,
                 tta: bool = False, num_threads: int | None = None) -> None:
        from face_emotion.inference.predictor import Predictor

        self.predictor = Predictor.load(model, detector=detector, backend=backend, tta=tta, num_threads=num_threads)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.predictor.classes

    @property
    def name(self) -> str:
        return self.predictor.spec.name

    def __repr__(self) -> str:
        return (f"FaceEmotion(model={self.name!r}, backend={self.predictor.backend_name!r}, "
                f"detector={self.predictor.detector_name!r})")

    def predict(self, source: "Source", *, explain: bool = False, detect: bool = True,
                path: str | None = None) -> "ImageResult | ClipAnalysis":
        """One image -> its ImageResult (faces largest first; ``.ok`` False with ``.error`` for an
        unreadable input, as the CLI reports it). A path to a video file -> :meth:`predict_video`.

        ``explain``: a heatmap PNG per face (FacePrediction.heatmap_png); ``detect=False``: the
        image is one face crop; ``path``: the name the result carries.
        """
        from face_emotion.inference.pipeline import analyse
        from face_emotion.video.decode import is_video_path

        if isinstance(source, (str, Path)) and is_video_path(Path(source)):
            return self.predict_video(source)
        return analyse(self.predictor, source, path=path, explain=explain, detect=detect)

    __call__ = predict

    def predict_many(self, sources: Iterable["Source"], **options: Any) -> list["ImageResult"]:
        """:meth:`predict` for each image, in order (one bad input does not stop the others)."""
        return [self.predict(source, **options) for source in sources]

    def predict_video(self, source: str | Path | bytes, *, sample_fps: float | None = None,
                      smooth_s: float | None = None, detect_interval_s: float | None = None) -> "ClipAnalysis":
        """A clip (a path or its bytes) -> ClipAnalysis: ``frames`` (FrameResult per analysed frame,
        faces with a ``track_id``) and ``summary`` (per track). Options as `face-emotion predict`'s;
        None keeps its default. Raises face_emotion.video.VideoDecodeError for an unreadable clip."""
        from face_emotion.video import VideoOptions, analyse_clip

        given = {"sample_fps": sample_fps, "smooth_s": smooth_s, "detect_interval_s": detect_interval_s}
        options = VideoOptions(**{k: v for k, v in given.items() if v is not None})
        path = str(source) if isinstance(source, (str, Path)) else None
        return analyse_clip(self.predictor, source, options, path=path)

    def stream(self, source: str | int | Path, *, sample_fps: float | None = None, smooth_s: float | None = None,
               detect_interval_s: float | None = None, realtime: bool = False, every_frame: bool = False,
               timeout_s: float | None = None, reconnect: int = 0, max_seconds: float | None = None,
               format: str | None = None) -> "LiveStream":
        """A live source -> FrameResult per analysed frame, as it is done (`face-emotion watch`).

        ``source``: a camera index (0) or device (/dev/video0), an rtsp://, http(s)://, udp:// or
        tcp:// URL, or a video file (read as fast as it decodes; ``realtime``: at its own pace,
        like a camera). The newest frame is analysed whenever the last is done; frames that
        arrive meanwhile are dropped and counted (each result's ``dropped``; ``every_frame``
        analyses them all, falling behind a live source instead). Faces keep a ``track_id`` and
        smoothed probabilities as in clips; each result has ``latency_ms`` (decoded to handed
        over). ``timeout_s`` (default 10): to open the source and between frames; ``reconnect``:
        retries of a network source that ends, drops or stalls; ``max_seconds``: of stream time;
        ``format``: an FFmpeg input format (v4l2, avfoundation, dshow). The other options as in
        :meth:`predict_video`.

        Raises face_emotion.video.stream.StreamError (a FaceEmotionError) when the source cannot
        be opened, at once; after the last frame when it stalls or fails part-way. Stop early by
        breaking out of the loop or calling ``close()`` (``with model.stream(...) as frames:``
        works too): the decoder and classifier threads end with it.
        """
        from face_emotion.errors import require_extra
        from face_emotion.video import VideoAnalyser, VideoOptions
        from face_emotion.video.stream import DEFAULT_TIMEOUT_S, LiveSource, LiveStream

        require_extra("video", "FaceEmotion.stream")

        given = {"sample_fps": sample_fps, "smooth_s": smooth_s, "detect_interval_s": detect_interval_s}
        options = VideoOptions(**{k: v for k, v in given.items() if v is not None})
        VideoAnalyser(self.predictor, options).warm_up()  # before the stream starts running
        live = LiveSource(source, timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s, realtime=realtime,
                          drop=False if every_frame else None, reconnect=reconnect, format=format)
        return LiveStream(self.predictor, live, options, max_seconds=max_seconds)
