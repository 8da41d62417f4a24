"""Live sources for the clip loop: cameras, network streams and files played at their own pace.

    camera index or device, rtsp/http(s)/udp/tcp URL, file --realtime
        -> PyAV decoder on its own thread -> newest-frame hand-off (one slot) -> ClipRun

A :class:`LiveSource` is another kind of input to video.analyse.ClipRun, the loop clips go
through: it has ``info`` and ``frames()`` as a VideoSource has, and ``live`` True. Its decoder
thread reads and decodes all the time, so network reads never wait for the model; the analysis
takes the newest decoded frame whenever it is ready for one, and a frame that a newer one
replaces before it was taken is dropped and counted (``dropped``), so nothing queues up behind
a slow analysis. ``drop=False`` hands every frame over instead (a bounded queue that holds the
decoder back): for files read as fast as they decode, and to compare against.

A stream's end is an end: FFmpeg reports the end of a live HTTP stream as EOF or as an I/O error
(errno 5). No data for ``timeout_s`` is a stall. ``reconnect`` retries a network source that
ends, drops or stalls that many times in a row (said through ``on_event``), continuing the same
stream time, frame numbers and tracks.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from face_emotion.errors import FaceEmotionError
from face_emotion.video.decode import DecodedFrame, VideoInfo

if TYPE_CHECKING:
    from face_emotion.video.results import FrameResult

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
DEFAULT_TIMEOUT_S = 10.0
# Frames decoded ahead when every frame is analysed (drop=False): enough to ride out a slow
# frame, few enough that memory stays small and a stall shows at once.
_QUEUE_FRAMES = 8


class StreamError(FaceEmotionError):
    """A live source that cannot be opened or read; the message says which and why."""

    code = "stream_unavailable"


class NotVideoError(StreamError):
    code = "not_video"


@dataclass(frozen=True)
class SourceSpec:
    """Where frames come from: what the user typed, and how FFmpeg opens it."""

    text: str  # as given, with any password in a URL masked: what messages and results show
    url: str  # what av.open gets
    kind: str  # "camera", "network" or "file"
    format: str | None = None  # FFmpeg demuxer to use (v4l2, avfoundation, dshow), None: probe

    @property
    def network(self) -> bool:
        return self.kind == "network"


def parse_source(source: str | int | Path, *, format: str | None = None) -> SourceSpec:
    """A camera index (``0``), a device path (``/dev/video0``), a URL or a file -> SourceSpec.

    A camera index means the platform's capture device through PyAV: v4l2's /dev/videoN on
    Linux, avfoundation on macOS, dshow on Windows (``video=NAME``: dshow names devices).
    StreamError when it is none of these.
    """
    text = str(source).strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in NETWORK_SCHEMES:
        # rtsp://user:password@camera/... : the password stays out of every line and file written.
        shown = re.sub(r"^([a-zA-Z][\w+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", text)
        return SourceSpec(shown, text, "network", format)
    if scheme:
        raise StreamError(f"cannot watch {text}: {scheme}:// is not a stream this reads "
                          f"(use {', '.join(s + '://' for s in NETWORK_SCHEMES[:8])}, a camera or a file)")
    if re.fullmatch(r"\d+", text):
        index = int(text)
        if format == "dshow" or (format is None and sys.platform == "win32"):
            return SourceSpec(text, f"video={text}", "camera", "dshow")
        if format == "avfoundation" or (format is None and sys.platform == "darwin"):
            return SourceSpec(text, f"{index}:none", "camera", "avfoundation")
        return SourceSpec(text, f"/dev/video{index}", "camera", format or "v4l2")
    if text.startswith("/dev/"):
        return SourceSpec(text, text, "camera", format or "v4l2")
    if text.startswith("video=") or format in ("dshow", "avfoundation", "v4l2"):
        return SourceSpec(text, text, "camera", format or "dshow")
    path = Path(text)
    if path.is_file():
        return SourceSpec(text, str(path), "file", format)
    raise StreamError(f"cannot watch {text}: no such file, camera index, device or stream URL")


@dataclass
class _Slot:
    frame: object  # av.VideoFrame, converted to RGB by whoever takes it
    index: int
    time_s: float
    decoded_at: float


class LiveSource:
    """An opened live source: :attr:`info`, then :meth:`frames` (newest frames); :meth:`close`
    (or ``with``) stops its decoder thread. Raises StreamError (NotVideoError) when it cannot be
    opened within ``timeout_s``.

    ``realtime``: a file is played at its own pace (a recording behaves like a camera);
    otherwise a file is read as fast as it decodes. ``drop``: newest-frame hand-off (default for
    cameras, networks and realtime files); False hands over every frame. ``reconnect``: network
    retries (see the module). ``on_event``: called with one line for each reconnection.
    """

    live = True

    def __init__(self, source: str | int | Path | SourceSpec, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 realtime: bool = False, drop: bool | None = None, reconnect: int = 0,
                 on_event: Callable[[str], None] | None = None, format: str | None = None) -> None:
        self.spec = source if isinstance(source, SourceSpec) else parse_source(source, format=format)
        self.timeout_s = float(timeout_s)
        self.realtime = realtime or self.spec.kind != "file"
        self.drop = self.realtime if drop is None else drop
        self.reconnect = int(reconnect) if self.spec.network else 0
        self.on_event = on_event or (lambda line: log.warning("%s", line))
        self.dropped = 0
        self.end_reason: str | None = None  # "end", "stalled", "stopped" or an error's message, once it ended
        self.error: StreamError | None = None  # why it ended, when not at its end
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._slot: _Slot | None = None
        self._queue: list[_Slot] = []
        self._finished = False
        self._container = None
        self._container = self._open_within_timeout()
        self._stream = self._container.streams.video[0]
        self.info = self._describe()
        self._thread = threading.Thread(target=self._decode_loop, name="face-emotion-live-decode", daemon=True)
        self._thread.start()

    # ---- opening ----------------------------------------------------------------------------
    def _open_within_timeout(self):
        """av.open on a helper thread: FFmpeg's own timeout covers reads, not every wait
        (a name lookup), and the user was promised an answer within timeout_s."""
        box: dict = {}

        def attempt() -> None:
            try:
                box["container"] = self._open()
            except BaseException as error:  # handed to the caller
                box["error"] = error

        helper = threading.Thread(target=attempt, name="face-emotion-live-open", daemon=True)
        helper.start()
        helper.join(self.timeout_s + 2.0)
        if helper.is_alive():
            raise StreamError(f"cannot open {self.spec.text}: no answer within {self.timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["container"]

    def _open(self):
        import av

        spec = self.spec
        if spec.kind == "camera" and spec.format == "v4l2" and not os.path.exists(spec.url):
            raise StreamError(f"no camera at {spec.url}" + (f" (camera {spec.text})" if spec.text != spec.url else ""))
        if spec.kind == "file":
            spec = self._file_format(spec)
        options = {}
        if spec.network:
            # Start at "now": what the demuxer read while probing the stream is not decoded later
            # in a burst (it would be stale, and would jump the tracker across the gap).
            options["fflags"] = "nobuffer"
        if spec.url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"  # UDP loses packets on busy networks; TCP is what cameras offer too
        try:
            container = av.open(spec.url, mode="r", format=spec.format, options=options,
                                timeout=(self.timeout_s, self.timeout_s))
        except av.error.ExitError:
            raise StreamError(f"cannot open {spec.text}: no answer within {self.timeout_s:g} s") from None
        except av.error.InvalidDataError:
            raise NotVideoError(f"cannot watch {spec.text}: it is not a video stream FFmpeg can read") from None
        except av.error.ConnectionRefusedError:
            raise StreamError(f"cannot open {spec.text}: the connection was refused (is the stream running?)") from None
        except av.error.HTTPError as error:
            raise StreamError(f"cannot open {spec.text}: the server answered {_reason(error)}") from None
        except (av.error.FFmpegError, OSError) as error:
            what = "camera" if spec.kind == "camera" else "stream" if spec.network else "file"
            raise StreamError(f"cannot open {what} {spec.text}: {_reason(error)}") from None
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            container.close()
            raise NotVideoError(f"cannot watch {spec.text}: it has no video ({', '.join(kinds)} only)")
        codec = container.streams.video[0].codec_context.name
        if container.format.name.endswith("_pipe") or container.format.name == "image2":
            container.close()
            raise NotVideoError(f"cannot watch {spec.text}: it is a single {codec} image, not a video stream")
        return container

    @staticmethod
    def _file_format(spec: SourceSpec) -> SourceSpec:
        """A file is recognised by its bytes, as `predict` recognises clips (video.decode): FFmpeg
        never probes it, so a text file (its tty demuxer), a playlist or an image is refused."""
        from dataclasses import replace

        from face_emotion.video.decode import describe_other, sniff_container

        try:
            with open(spec.url, "rb") as file:
                head = file.read(512)
        except OSError as error:
            raise StreamError(f"cannot watch {spec.text}: {_reason(error)}") from None
        container = spec.format or sniff_container(head)
        if container is None:
            raise NotVideoError(f"cannot watch {spec.text}: not a video stream ({describe_other(head)}); "
                                f"files may be MP4/MOV, MKV/WebM, AVI or MPEG-TS")
        return replace(spec, format=container)

    def _describe(self) -> VideoInfo:
        stream, container = self._stream, self._container
        context = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if self.spec.kind == "file" and container.duration is not None:
            duration = container.duration / 1_000_000.0
        frames = int(stream.frames) if self.spec.kind == "file" and stream.frames else None
        return VideoInfo(int(context.width or 0), int(context.height or 0), fps, duration, frames,
                         container.format.name, context.name)

    # ---- the decoder thread -----------------------------------------------------------------
    def _decode_loop(self) -> None:
        index, offset, failures = 0, 0.0, 0
        container = self._container
        while True:
            before = index
            reason, last_time, index = self._decode_connection(container, index, offset)
            _close(container)
            if self._stop.is_set():
                reason = "stopped"
            if reason == "stalled" and index > before and self.spec.url.lower().startswith(("udp:", "rtp:")):
                reason = "end"  # datagrams have no end of stream: silence after frames is how a sender stops
            if index > before:
                failures = 0  # a connection that gave frames earns a fresh set of retries
            if reason == "stopped" or failures >= self.reconnect:
                break
            offset = max(offset, last_time + (1.0 / self.info.fps if self.info.fps > 0 else 0.04))
            what = {"end": "ended", "stalled": f"sent nothing for {self.timeout_s:g} s"}.get(reason, reason)
            container = None
            while container is None and failures < self.reconnect and not self._stop.is_set():
                failures += 1
                self.on_event(f"{self.spec.text} {what}: reconnecting ({failures} of {self.reconnect})")
                if self._stop.wait(min(1.0, self.timeout_s)):
                    break
                try:
                    container = self._open()
                except StreamError as error:
                    what = error.message
            if container is None:
                if not self._stop.is_set():
                    self.on_event(f"{self.spec.text}: gave up after {self.reconnect} reconnection attempts")
                break
            self._container = container
        self._finish(reason)

    def _decode_connection(self, container, index: int, offset: float) -> tuple[str, float, int]:
        """Decode one connection until it ends: (why it ended, stream time of its last frame, next index)."""
        import av

        stream = container.streams.video[0]
        # Frame threads hold each frame back until the next ones arrive (a frame per thread):
        # latency, for a live source. Slice threads do not.
        stream.thread_type = "SLICE" if self.drop else "AUTO"
        # Stream time counts from the stream's start as the demuxer saw it, so frames that
        # probing read and nobuffer skipped still count in it; else from the first frame.
        first: float | None = None
        if stream.start_time is not None and stream.time_base:
            first = float(stream.start_time * stream.time_base)
        last_time = offset
        fallback = 1.0 / self.info.fps if self.info.fps > 0 else 0.04
        started = time.monotonic()
        try:
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return "stopped", last_time, index
                own = frame.time if frame.time is not None else (index * fallback)
                first = own if first is None else min(first, own)
                time_s = offset + max(0.0, own - first)
                if self.spec.kind == "file" and self.realtime:
                    # As a camera would deliver it: not before its time.
                    wait = started + (time_s - offset) - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return "stopped", last_time, index
                self._hand_over(_Slot(frame, index, time_s, time.monotonic()))
                last_time = time_s
                index += 1
        except av.error.ExitError:
            return "stalled", last_time, index
        except av.error.EOFError:
            return "end", last_time, index
        except (av.error.FFmpegError, OSError) as error:
            if getattr(error, "errno", None) == errno.EIO or isinstance(error, EOFError):
                return "end", last_time, index  # how FFmpeg reports the end of a live HTTP stream
            if isinstance(error, TimeoutError) or getattr(error, "errno", None) == errno.ETIMEDOUT:
                return "stalled", last_time, index
            return f"error: {_reason(error)}", last_time, index
        return "end", last_time, index

    def _hand_over(self, slot: _Slot) -> None:
        with self._cond:
            if self.drop:
                if self._slot is not None:
                    self.dropped += 1  # replaced before the analysis took it
                self._slot = slot
                self._cond.notify_all()
                return
            while len(self._queue) >= _QUEUE_FRAMES and not self._stop.is_set():
                self._cond.wait(0.1)
            self._queue.append(slot)
            self._cond.notify_all()

    def _finish(self, reason: str) -> None:
        with self._cond:
            self.end_reason = reason
            if reason == "stalled":
                self.error = StreamError(f"{self.spec.text} sent no frame for {self.timeout_s:g} s", code="stalled")
            elif reason.startswith("error"):
                self.error = StreamError(f"{self.spec.text}: {reason[len('error: '):]}")
            self._finished = True
            self._cond.notify_all()

    # ---- the analysis side ------------------------------------------------------------------
    def frames(self) -> Iterator[DecodedFrame]:
        """The newest frame each time one is asked for (every frame with drop=False), until the
        source ends or is closed; ``dropped`` on each frame counts the frames skipped so far."""
        while True:
            with self._cond:
                while self._slot is None and not self._queue and not self._finished and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
                if self.drop:
                    slot, self._slot = self._slot, None
                else:
                    slot = self._queue.pop(0) if self._queue else None
                    self._cond.notify_all()
                dropped = self.dropped
            if slot is None:
                return
            rgb = slot.frame.to_ndarray(format="rgb24")
            yield DecodedFrame(slot.index, slot.time_s, rgb, decoded_at=slot.decoded_at, dropped=dropped)

    def request_stop(self) -> None:
        """Ends :meth:`frames` at once (safe from a signal handler); :meth:`close` still joins."""
        self._stop.set()

    def close(self, *, wait: bool = True) -> None:
        """Stops the decoder thread and closes the source. ``wait``: until the thread has ended
        (at most a read timeout, when it is blocked on a source that sends nothing)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = getattr(self, "_thread", None)
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout_s + 2.0)
        if thread is None and self._container is not None:
            self._container.close()

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close(container) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
        pass


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


def with_latency(item) -> "FrameResult":
    """An analysed live frame's result with ``latency_ms``: from its decoding to now (when it is
    written or handed to the caller)."""
    from dataclasses import replace

    decoded_at = item.decoded.decoded_at
    latency = None if decoded_at is None else (time.monotonic() - decoded_at) * 1000.0
    return replace(item.result, latency_ms=latency)


def _results(clip, source: LiveSource, max_seconds: float | None) -> Iterator["FrameResult"]:
    for item in clip:
        if max_seconds is not None and item.decoded.time_s >= max_seconds:
            return
        if item.result is not None:
            yield with_latency(item)
    if source.error is not None:
        raise source.error


class LiveStream:
    """FaceEmotion.stream's iterator: FrameResult per analysed frame, as soon as it is done, with
    ``latency_ms`` and ``dropped``. Stops when the source ends, after ``max_seconds`` of stream,
    when the loop over it breaks (the iterator is released), or on :meth:`close`, and then leaves
    no thread running. A source that stalls or fails part-way raises StreamError after its last
    frame. :meth:`summary`: the per-track summary so far."""

    def __init__(self, predictor, source: LiveSource, options=None, *, max_seconds: float | None = None) -> None:
        from face_emotion.video.analyse import ClipRun

        self.source = source
        self.clip = ClipRun(predictor, source, options, path=source.spec.text)
        self.max_seconds = max_seconds
        # A plain generator over the loop, holding no reference back to this object: releasing the
        # iterator (a loop that breaks) then closes it at once, with no cycle left for the GC.
        self._items = _results(self.clip, source, max_seconds)
        self._closed = False

    def __iter__(self) -> "LiveStream":
        return self

    def __next__(self) -> "FrameResult":
        try:
            return next(self._items)
        except BaseException:
            self.close()
            raise

    @property
    def dropped(self) -> int:
        return self.source.dropped

    def summary(self):
        return self.clip.summary()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.source.request_stop()
        self._items.close()
        self.source.close()

    def __enter__(self) -> "LiveStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()
