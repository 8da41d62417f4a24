"""Video: clips in, per-face tracks, smoothed emotions, summaries and timelines out.

    from face_emotion.inference.predictor import Predictor
    from face_emotion.video import analyse_video, summarise

    predictor = Predictor.load()
    frames = list(analyse_video(predictor, "clip.mp4"))   # one FrameResult per analysed frame
    summary = summarise(frames, predictor.classes)          # per track and for the clip

Heavy libraries (PyAV, OpenCV, trackers, matplotlib) are imported when first used.
"""

from face_emotion.video.analyse import (
    DEFAULT_DETECT_INTERVAL_S,
    AnalysedFrame,
    StageTimes,
    VideoAnalyser,
    VideoOptions,
    analyse_video,
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
    "DEFAULT_DETECT_INTERVAL_S", "DEFAULT_SMOOTH_S", "VIDEO_EXTENSIONS", "AnalysedFrame", "FrameResult",
    "NoVideoStreamError", "StageTimes", "SummaryBuilder", "TrackSummary", "TrackedPrediction", "VideoAnalyser",
    "VideoDecodeError", "VideoInfo", "VideoLimits", "VideoOptions", "VideoSource", "VideoSummary",
    "VideoTooLargeError", "analyse_video", "csv_header", "is_video_path", "summarise",
]
