"""Clip bytes or files -> RGB frames with their times. The first arrow of the video data flow.

Containers are recognised by their first bytes and FFmpeg is told which demuxer to use, so it
never probes: a file named .mp4 that is an HLS playlist or a concat script (demuxers that open
other files and URLs) is refused instead of being followed. Limits (bytes, duration, pixels)
are checked on the container header before the first frame is decoded, and again while decoding,
because a header can lie about the duration.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from face_emotion.errors import FaceEmotionError

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".3gp", ".mkv", ".webm", ".avi", ".ts", ".mts"})

# First bytes -> FFmpeg demuxer. These four families cover phones, cameras, browsers
# (MediaRecorder writes WebM) and screen recorders.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_CONTAINER_NAMES = {"mov": "MP4/MOV", "matroska": "MKV/WebM", "avi": "AVI", "mpegts": "MPEG-TS"}


class VideoDecodeError(FaceEmotionError, ValueError):
    """The bytes are not a clip we can read (corrupt, truncated, not a video, no video stream)."""

    code = "invalid_video"


class NoVideoStreamError(VideoDecodeError):
    code = "no_video_stream"


class VideoTooLargeError(VideoDecodeError):
    """Over a limit: bytes, duration or pixels per frame. ``code`` names which."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be; None: no limit (the CLI reads the user's own files)."""

    max_bytes: int | None = None
    max_duration_s: float | None = None
    max_pixels: int | None = None  # width * height of one frame


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # average frame rate the container declares
    duration_s: float | None  # None when the container does not say
    frames: int | None  # frame count the container declares, None when unknown
    container: str  # FFmpeg demuxer
    codec: str

    def to_dict(self) -> dict:
        return {
            "width": self.width, "height": self.height, "fps": round(self.fps, 3),
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "frames": self.frames, "container": self.container, "codec": self.codec,
        }


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # 0-based position among the clip's decoded frames
    time_s: float  # presentation time from the clip's start
    rgb: np.ndarray  # (height, width, 3) uint8
    # Live sources only (None for clips): when the frame was decoded (time.monotonic()), and how
    # many frames the source skipped so far because analysis was behind.
    decoded_at: float | None = None
    dropped: int | None = None


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def sniff_container(head: bytes) -> str | None:
    """The FFmpeg demuxer for a clip starting with ``head`` (64 bytes are plenty), None if unknown."""
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "mov"  # FFmpeg's one demuxer for mov, mp4, m4v, 3gp
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    return None


class VideoSource:
    """An opened clip: :attr:`info`, then :meth:`frames` once. Use as a context manager.

    ``source``: a path or the clip's bytes (bytes are decoded from memory, never written to disk).
    """

    live = False  # every frame, in order (video.stream.LiveSource is the live kind)

    def __init__(self, source: str | Path | bytes, limits: VideoLimits | None = None) -> None:
        import av

        self.limits = limits or VideoLimits()
        self._container = None
        fileobj: BinaryIO
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            size = len(data)
            fileobj = io.BytesIO(data)
        else:
            path = Path(source)
            size = os.path.getsize(path)
            fileobj = open(path, "rb")
        self._file = fileobj
        try:
            self._check_size(size)
            head = fileobj.read(512)
            fileobj.seek(0)
            container_format = sniff_container(head)
            if container_format is None:
                what = describe_other(head)
                raise VideoDecodeError(f"not a video we can read ({what}); send MP4/MOV, MKV/WebM, AVI or MPEG-TS")
            try:
                self._container = av.open(fileobj, mode="r", format=container_format)
            except av.error.FFmpegError as error:
                raise VideoDecodeError(f"the clip is damaged: its {_CONTAINER_NAMES[container_format]} container "
                                       f"cannot be read ({_reason(error)})") from None
            kinds = sorted({s.type for s in self._container.streams})
            if not kinds:
                raise VideoDecodeError("the clip is damaged: its container holds no stream at all")
            if not self._container.streams.video:
                raise NoVideoStreamError(f"the file has no video stream ({', '.join(kinds)} only)")
            self._stream = self._container.streams.video[0]
            self.info = self._probe(container_format)
            self._check_header(self.info)
        except BaseException:
            self.close()
            raise

    # ---- checks before decoding ------------------------------------------------------------
    def _check_size(self, size: int) -> None:
        if size == 0:
            raise VideoDecodeError("the file is empty (0 bytes)")
        limit = self.limits.max_bytes
        if limit is not None and size > limit:
            raise VideoTooLargeError(f"the clip is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB",
                                     "video_too_large")

    def _probe(self, container_format: str) -> VideoInfo:
        stream = self._stream
        context = stream.codec_context
        width, height = int(context.width or 0), int(context.height or 0)
        if width <= 0 or height <= 0:
            raise VideoDecodeError("the video stream declares no frame size (damaged header)")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration_s = None
        if stream.duration is not None and stream.time_base:
            duration_s = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration_s = self._container.duration / 1_000_000.0
        frames = int(stream.frames) if stream.frames else None
        return VideoInfo(width, height, fps, duration_s, frames, container_format, context.name)

    def _check_header(self, info: VideoInfo) -> None:
        self._check_pixels(info.width, info.height)
        if info.duration_s is not None:
            self._check_duration(info.duration_s)

    def _check_pixels(self, width: int, height: int) -> None:
        limit = self.limits.max_pixels
        if limit is not None and width * height > limit:
            raise VideoTooLargeError(
                f"frames are {width}x{height} = {width * height:,} pixels; the limit is {limit:,}",
                "video_resolution_too_large")

    def _check_duration(self, seconds: float) -> None:
        limit = self.limits.max_duration_s
        if limit is not None and seconds > limit:
            raise VideoTooLargeError(f"the clip lasts {seconds:.1f} s or more; the limit is {limit:g} s",
                                     "video_too_long")

    # ---- decoding ---------------------------------------------------------------------------
    def frames(self, prefetch: int = 8) -> Iterator[DecodedFrame]:
        """Every frame in presentation order. Raises VideoDecodeError where the clip is damaged.

        ``prefetch`` > 0: up to that many frames are decoded ahead on a thread of their own
        (FFmpeg and the RGB conversion release the GIL), so decoding overlaps the analysis of
        the frames before on a second core. Stopping early (closing the generator) stops it.
        """
        if prefetch <= 0:
            yield from self._decode()
            return
        import queue
        import threading

        frames: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for frame in self._decode():
                    while not stop.is_set():
                        try:
                            frames.put(frame, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                item = done
            except BaseException as error:  # handed to the consumer, raised there
                item = error
            while not stop.is_set():
                try:
                    frames.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        worker = threading.Thread(target=produce, name="face-emotion-decode", daemon=True)
        worker.start()
        try:
            while True:
                item = frames.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def _decode(self) -> Iterator[DecodedFrame]:
        import av

        stream = self._stream
        # Frame threads: decoding is a small share of the work, but free on an idle core.
        stream.thread_type = "AUTO"
        start = stream.start_time if stream.start_time is not None else 0
        time_base = stream.time_base or Fraction(1, 1)
        index = 0
        fallback_step = 1.0 / self.info.fps if self.info.fps > 0 else 0.04
        last_time = -fallback_step
        try:
            for frame in self._container.decode(stream):
                if frame.pts is not None:
                    time_s = float((frame.pts - start) * time_base)
                else:
                    time_s = last_time + fallback_step
                time_s = max(time_s, 0.0)
                last_time = time_s
                self._check_pixels(frame.width, frame.height)
                self._check_duration(time_s)
                yield DecodedFrame(index, time_s, frame.to_ndarray(format="rgb24"))
                index += 1
        except av.error.FFmpegError as error:
            where = f"after frame {index}" if index else "before its first frame"
            raise VideoDecodeError(f"the clip is damaged {where}: {_reason(error)}") from None
        if index == 0:
            raise VideoDecodeError("the clip holds no decodable frame (truncated or damaged)")
        # FFmpeg ends quietly where a file was cut off; the header's count says what was lost.
        declared = self.info.frames
        if declared and index < declared - max(2, declared // 50):
            raise VideoDecodeError(f"the clip is truncated: it ends after frame {index} of the {declared} "
                                   f"its header declares")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._file.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def describe_other(head: bytes) -> str:
    """What a file that is not a clip seems to be, from its first bytes (for error messages)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(head + b"\0" * 64)) as image:
            return f"it is a {image.format} image"
    except Exception:
        pass
    if head[:3] == b"ID3" or head[:4] in (b"fLaC", b"OggS") or head[:2] in (b"\xff\xfb", b"\xff\xf3"):
        return "it looks like an audio file"
    return "unknown file type"
