"""A clip replayed as a live stream: MPEG-TS over HTTP, paced at the clip's own rate.

    python -m face_emotion.video.replay clip.mp4 --port 8080 --loops 3
    face-emotion watch http://127.0.0.1:8080/live.ts

To try `watch` without a camera, and what its tests and benchmarks/stream_latency.py serve on
loopback. Like a camera's stream it is live: the stream's clock starts with its first client, and
every client gets the bytes of "now", sent as the clip's time reaches them (a client that
connects later starts at the last key frame, as live servers keep the current group of pictures). The clip is re-encoded
once to H.264 without B-frames (each frame's bytes are sent at its own time, as a live encoder
sends them) with a key frame every half second (a late client starts decoding within 0.5 s).
A few paths misbehave on purpose, as real sources do, for the tests: ``/stall.ts`` stops sending
after ``stall_after_s`` and keeps the connection open; ``/drop.ts`` closes its first connection
after ``drop_after_s`` (later connections get the live stream); ``/page.html`` is not video.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Chunk:
    offset: int  # byte position in the stream
    time_s: float  # when it is due, from the stream's start
    key: bool = False  # a key frame starts here: a client may join


def encode_ts(frames, fps: float, *, loops: int = 1) -> tuple[bytes, list[Chunk], float]:
    """RGB frames (repeated ``loops`` times) -> (MPEG-TS bytes, the byte offset due at each
    frame's time, the stream's duration in seconds)."""
    import av

    frames = list(frames)
    rate = Fraction(fps).limit_denominator(1001)
    buffer = io.BytesIO()
    count = 0
    with av.open(buffer, mode="w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=rate)
        height, width = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "23",
                          "g": str(max(1, round(float(rate) / 2))), "bf": "0"}
        for _ in range(loops):
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(rgb[: stream.height, : stream.width].copy(), format="rgb24")
                frame.pts = count
                frame.time_base = 1 / rate
                count += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = buffer.getvalue()
    return data, schedule(data), count / float(rate)


def schedule(data: bytes) -> list[Chunk]:
    """Where each video packet of an MPEG-TS starts, and its decoding time from the first."""
    import av

    chunks: list[Chunk] = []
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        stream = container.streams.video[0]
        first = None
        for packet in container.demux(stream):
            if packet.dts is None or packet.pos is None or packet.pos < 0:
                continue
            seconds = float(packet.dts * packet.time_base)
            first = seconds if first is None else first
            chunks.append(Chunk(int(packet.pos) - int(packet.pos) % 188, seconds - first, bool(packet.is_keyframe)))
    return chunks


def clip_frames(path: str | Path) -> tuple[list, float]:
    """A clip's RGB frames and frame rate."""
    from face_emotion.video.decode import VideoSource

    with VideoSource(path) as video:
        return [frame.rgb for frame in video.frames()], video.info.fps


class LiveServer:
    """``with LiveServer(data, chunks) as server:`` serves the stream at ``server.url("live.ts")``
    on 127.0.0.1 from a thread of its own; the stream's clock starts when the server does (or at
    :meth:`restart`)."""

    def __init__(self, data: bytes, chunks: list[Chunk], *, port: int = 0, stall_after_s: float = 1.0,
                 drop_after_s: float = 1.0) -> None:
        self.data, self.chunks = data, chunks
        self.stall_after_s, self.drop_after_s = stall_after_s, drop_after_s
        self.started: float | None = None  # time.monotonic() when the stream's clock started
        self.connections: list[str] = []
        self.first_byte_at: float | None = None  # time.monotonic() of the first stream byte sent
        self._dropped_once = False
        self._stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                owner.connections.append(self.path)
                if self.path == "/page.html":
                    body = b"<!doctype html><title>not a video</title><p>Hello" + b" " * 4096
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if self.path not in ("/live.ts", "/stall.ts", "/drop.ts") or owner.over():
                    self.send_error(404)  # no such stream, or no longer: it is over
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    owner._send(self.wfile, self.path)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="replay-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "live.ts") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def over(self) -> bool:
        """The stream has been played to its end (a live stream does not start again)."""
        return self.started is not None and time.monotonic() - self.started > self.chunks[-1].time_s + 0.5

    def restart(self) -> None:
        """The stream starts again from its beginning with the next client."""
        self.started = None
        self.first_byte_at = None

    def _send(self, out, path: str) -> None:
        if self.started is None:
            self.started = time.monotonic()
        now = time.monotonic() - self.started
        # A late client joins at the last key frame due by now, as it would join a camera's stream.
        due = [i for i, c in enumerate(self.chunks) if c.key and c.time_s <= now + 1e-3]
        start = due[-1] if due else 0
        out.write(self.data[: self.chunks[0].offset])  # the stream's tables (PAT, PMT) first
        cut = None
        if path == "/stall.ts":
            cut = self.stall_after_s
        elif path == "/drop.ts" and not self._dropped_once:
            self._dropped_once = True
            cut = self.drop_after_s
        for i in range(start, len(self.chunks)):
            chunk = self.chunks[i]
            if cut is not None and chunk.time_s >= cut:
                if path == "/stall.ts":
                    self._stop.wait(3600)  # hold the connection open, sending nothing
                return
            wait = self.started + chunk.time_s - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            end = self.chunks[i + 1].offset if i + 1 < len(self.chunks) else len(self.data)
            out.write(self.data[chunk.offset:end])
            out.flush()
            if self.first_byte_at is None:
                self.first_byte_at = time.monotonic()

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--loops", type=int, default=1, help="play the clip this many times in a row")
    args = parser.parse_args(argv)
    frames, fps = clip_frames(args.clip)
    data, chunks, seconds = encode_ts(frames, fps, loops=args.loops)
    with LiveServer(data, chunks, port=args.port) as server:
        print(f"{server.url()} ({seconds:.1f} s, live from now; Ctrl-C stops)", flush=True)
        try:
            time.sleep(seconds + 1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
