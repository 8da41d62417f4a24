"""Video: clips in, per-face tracks, smoothed emotions, summaries and timelines out.

    from face_emotion.inference.predictor import Predictor
    from face_emotion.video import analyse_clip, analyse_video, summarise

    predictor = Predictor.load()
    for frame in analyse_video(predictor, "clip.mp4"):     # one FrameResult per analysed frame
        print(frame.time_s, [(f.track_id, f.prediction.emotion) for f in frame.faces])
    analysis = analyse_clip(predictor, "clip.mp4")          # .frames and .summary in one call
    with open_clip(predictor, "clip.mp4") as clip:           # the loop both of them run
        for item in clip:                                    # every decoded frame (AnalysedFrame)
            ...
        print(clip.summary().to_dict())
    summary = summarise(analysis.frames, predictor.classes)  # the same summary, from frames you kept

Live sources (cameras, network streams, files at their own pace) go through the same loop:
video.stream.LiveSource is another kind of input to ClipRun (`face-emotion watch`,
FaceEmotion.stream).

Heavy libraries (PyAV, OpenCV, trackers, matplotlib) are imported when first used.
"""

from face_emotion.video.analyse import (
    DEFAULT_DETECT_INTERVAL_S,
    AnalysedFrame,
    AnalysisTimeout,
    ClipAnalysis,
    ClipRun,
    StageTimes,
    VideoAnalyser,
    VideoOptions,
    analyse_clip,
    analyse_video,
    open_clip,
)
from face_emotion.video.decode import (
    VIDEO_EXTENSIONS,
    NoVideoStreamError,
    VideoDecodeError,
    VideoInfo,
    VideoLimits,
    VideoSource,
    VideoTooLargeError,
    is_video_path,
)
from face_emotion.video.results import FrameResult, TrackedPrediction, csv_header
from face_emotion.video.smoothing import DEFAULT_SMOOTH_S
from face_emotion.video.summary import SummaryBuilder, TrackSummary, VideoSummary, summarise

__all__ = [
    "DEFAULT_DETECT_INTERVAL_S", "DEFAULT_SMOOTH_S", "VIDEO_EXTENSIONS", "AnalysedFrame", "AnalysisTimeout",
    "ClipAnalysis", "ClipRun", "FrameResult",
    "NoVideoStreamError", "StageTimes", "SummaryBuilder", "TrackSummary", "TrackedPrediction", "VideoAnalyser",
    "VideoDecodeError", "VideoInfo", "VideoLimits", "VideoOptions", "VideoSource", "VideoSummary",
    "VideoTooLargeError", "analyse_clip", "analyse_video", "csv_header", "is_video_path", "open_clip",
    "summarise",
]
