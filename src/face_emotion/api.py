"""The Python API: one object that opens a model once and answers for any input.

    from face_emotion import FaceEmotion

    model = FaceEmotion()                       # the bundled model; or FaceEmotion("runs/exp1")
    result = model.predict("photo.jpg")         # also bytes, a PIL image or an RGB array
    print(result.emotion, result.to_dict())     # the ImageResult `face-emotion predict` prints
    clip = model.predict("clip.mp4")            # a video: ClipAnalysis (.frames, .summary)

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
