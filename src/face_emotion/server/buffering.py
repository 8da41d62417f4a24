"""A gunicorn worker that reads every request to its end before one of its threads sees it.

gunicorn's gthread worker hands a connection to one of its few threads as soon as the first byte
arrives, and that thread then reads the headers and body with blocking calls. A client that sends
its headers a line every few seconds, or stalls mid-body, holds the thread; a handful of such
clients, or a few dozen that connect and send nothing, hold them all, and the service stops
answering. gunicorn's documentation says so: sync and threaded workers need a buffering proxy in
front. This worker is that buffer, in the event loop (a selector) gthread already runs:

- a new connection, or a kept-alive one that becomes readable, is read without blocking in the
  worker's main thread; only a request whose headers and body have all arrived goes to a thread
  (and so to the inference slot), with its bytes handed to gunicorn's own parser;
- the headers must arrive within ``header_timeout_s`` of the connection (or of the first byte of
  the next request on a kept-alive one); the body may pause at most ``body_timeout_s`` and must
  average ``MIN_BODY_RATE`` after its first ``body_timeout_s``; otherwise 408 and close;
- a body larger than its route allows is answered 413 from its Content-Length, before it is read;
- past ``max_connections`` (this worker's open connections: arriving, queued, answered or kept
  alive) a new connection is answered 503, after a moment's pause in which workers with room may
  take it; so is a body that would take the bytes this worker holds for unfinished uploads past
  ``max_buffer_bytes``.

Idle kept-alive connections are closed by gthread itself after its keepalive setting. Every
answer given here is JSON {"error": {"code", "message"}}, as the app's own errors, with
Connection: close. Sockets carry SO_SNDTIMEO/SO_RCVTIMEO of ``body_timeout_s`` as a backstop,
so a thread writing an answer to a client that never reads fails instead of waiting for ever.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import struct
import time
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import _DEFER, TConn, ThreadWorker

# The route whose bodies may be as large as a clip (ServerConfig.max_video_mb); every other
# route takes at most ServerConfig.max_upload_mb.
VIDEO_PATH = "/predict/video"
# A request line and headers longer than this are answered 431 (nginx allows 4 x 8 kB by default).
MAX_HEADER_BYTES = 64 * 1024
# After its first body_timeout_s, a body must have averaged this many bytes a second: a client
# trickling a byte at a time must not keep a connection for hours (Apache's mod_reqtimeout
# MinRate). A phone's slowest uplink sends a clip a hundred times faster.
MIN_BODY_RATE = 1024
# How long a refused connection is drained before it is closed, so that the client, still
# sending, reads our answer instead of a reset (at most max_connections of them drain at once).
LINGER_S = 5.0
# Largest single recv (a clip arrives in a few hundred of these; each returns the GIL).
RECV_BYTES = 256 * 1024
# Deadlines are checked at most this often (each check walks the waiting connections).
SWEEP_S = 0.25
# New connections accepted per wake-up of the listening socket. One, as gthread: every worker is
# woken by a newcomer, so taking one at a time spreads a burst of connections over the workers
# (each has one inference slot) instead of the first awake taking them all.
ACCEPTS_PER_WAKE = 1
# The cap is per worker, and the kernel does not spread connections evenly between workers. So a
# worker at its cap first stops accepting for GIVE_WAY_S, leaving newcomers to workers with room;
# then for REFUSE_S it answers them 503 itself, since every worker may be full.
GIVE_WAY_S = 0.2
REFUSE_S = 0.5
ACCEPT_ALL = 1 << 30

_REASONS = {408: "Request Timeout", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


@dataclass(frozen=True)
class HoldLimits:
    """What the worker enforces; built by the runner from RunOptions and ServerConfig."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 256
    max_buffer_bytes: int = 200 * 1024 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024
    max_video_bytes: int = 50 * 1024 * 1024

    def body_limit(self, path: str) -> int:
        return self.max_video_bytes if path == VIDEO_PATH else self.max_upload_bytes


def error_answer(status: int, code: str, message: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 answer with the app's JSON error shape, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store",
             "X-Content-Type-Options: nosniff", *(f"{k}: {v}" for k, v in extra_headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HeldUnreader(SocketUnreader):
    """gunicorn's socket reader, serving the bytes already read first.

    The bytes are handed out a socket read's worth at a time, as the socket would: given to the
    parser's ``unread`` at once, a clip would be copied whole on every 64 kB the app reads.
    """

    def __init__(self, sock, held: bytes | bytearray):
        super().__init__(sock)
        self.held = memoryview(held)
        self.at = 0

    def chunk(self, size_hint=None):
        if self.at < len(self.held):
            size = max(self.mxchunk, min(size_hint or 0, self.max_body_chunk))
            piece = bytes(self.held[self.at:self.at + size])
            self.at += len(piece)
            return piece
        return super().chunk(size_hint)

    def take_buffered(self):
        ahead = super().take_buffered() + bytes(self.held[self.at:])
        self.held, self.at = memoryview(b""), 0
        return ahead


class _Conn(TConn):
    """A connection with the request bytes read ahead for gunicorn's parser."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.buffered: bytearray | None = None
        self.reserved = 0  # bytes of this worker's buffer budget the request holds until answered


class _Incoming:
    """A request being read: its bytes so far and where its framing stands."""

    __slots__ = ("conn", "data", "began", "header_end", "length", "chunked", "chunk_at", "trailers",
                 "body_began", "last_read", "reserved", "path")

    def __init__(self, conn: _Conn, data: bytes, now: float):
        self.conn = conn
        self.data = bytearray(data)
        self.began = now
        self.header_end: int | None = None
        self.length: int | None = None  # Content-Length; None: no body, or chunked
        self.chunked = False
        self.chunk_at = 0  # where the next chunk-size line starts (chunked bodies)
        self.trailers = False
        self.body_began = now
        self.last_read = now
        self.reserved = 0
        self.path = ""

    def deadline(self, limits: HoldLimits) -> float:
        if self.header_end is None:
            return self.began + limits.header_timeout_s
        received = len(self.data) - self.header_end
        return min(self.last_read + limits.body_timeout_s,
                   self.body_began + limits.body_timeout_s + received / MIN_BODY_RATE)


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, extra_headers=()):
        super().__init__(message)
        self.answer = error_answer(status, code, message, tuple(extra_headers))


class _HandOff(Exception):
    """Framing this front does not judge (conflicting lengths, an unknown transfer coding): the
    request goes to gunicorn's parser as it is, which rejects it before reading a body."""


class BufferingWorker(ThreadWorker):
    """gthread, with requests read to their end in the event loop (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits: HoldLimits = getattr(self.app, "hold_limits", None) or HoldLimits()
        # gthread's loop stops accepting while nr_conns >= worker_connections; this worker keeps
        # accepting past its cap to answer 503, so the setting is lifted (and dropped to 0 while the
        # worker gives way, see accept); kept-alive connections are bounded by the cap.
        self.worker_connections = ACCEPT_ALL
        self.max_keepalived = self.limits.max_connections
        self._resume_at = 0.0  # while giving way: when to accept again
        self._refuse_until = 0.0  # until then, newcomers past the cap are answered 503
        self._incoming: dict[_Conn, _Incoming] = {}
        self._lingering: dict[socket.socket, float] = {}
        self._buffered = 0  # bytes reserved by requests being read or waiting for a thread
        self._next_sweep = 0.0

    # ---- connections arriving -------------------------------------------------------------
    def accept(self, listener):
        for _ in range(ACCEPTS_PER_WAKE):
            now = time.monotonic()
            if self.nr_conns >= self.limits.max_connections and now >= self._refuse_until:
                self._resume_at = now + GIVE_WAY_S
                self._refuse_until = self._resume_at + REFUSE_S
                self.worker_connections = 0
                self.set_accept_enabled(False)
                return
            try:
                sock, address = listener.accept()
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.warning("cannot accept a connection: %s", error)
                    return
                if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    raise
                return
            if self.nr_conns >= self.limits.max_connections:
                self._refuse(sock, error_answer(
                    503, "too_many_connections",
                    f"the server holds its limit of {self.limits.max_connections} connections per worker; "
                    "try again shortly", (("Retry-After", "1"),)))
                continue
            self.nr_conns += 1
            conn = _Conn(self.cfg, sock, address, listener.getsockname())
            timeout = struct.pack("ll", int(self.limits.body_timeout_s),
                                  int(self.limits.body_timeout_s % 1 * 1_000_000))
            for option in (socket.SO_SNDTIMEO, socket.SO_RCVTIMEO):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, timeout)
                except OSError:  # not a TCP socket (a Unix socket keeps its defaults)
                    pass
            self._read_request(conn, b"")

    def on_client_socket_readable(self, conn, client):
        # A kept-alive connection sends its next request: read it here too, not in a thread.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn, b"")

    def finish_request(self, conn, fs):
        self._buffered -= conn.reserved
        conn.reserved = 0
        result = None if fs.cancelled() or fs.exception() is not None else fs.result()
        if result and result is not _DEFER and self.alive and conn.parser is not None:
            # Bytes read past the answered request (a pipelined next one) are read to the end here
            # as well; gthread would hand them straight to a thread.
            ahead = conn.parser.unreader.take_buffered()
            if ahead:
                conn.sock.setblocking(False)
                self._read_request(conn, ahead)
                return
        super().finish_request(conn, fs)

    def handle(self, conn):
        """Runs in a thread, once the whole request is in ``conn.buffered``."""
        data, conn.buffered = conn.buffered, None
        if data is not None:
            conn.init()
            conn.parser.unreader = HeldUnreader(conn.sock, data)
        return super().handle(conn)

    # ---- reading a request ----------------------------------------------------------------
    def _read_request(self, conn: _Conn, ahead: bytes) -> None:
        incoming = _Incoming(conn, ahead, time.monotonic())
        self._incoming[conn] = incoming
        if ahead and self._progress(incoming):
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, incoming))
        self._on_readable(incoming, conn.sock)

    def _on_readable(self, incoming: _Incoming, _sock) -> None:
        conn = incoming.conn
        if self._incoming.get(conn) is not incoming:
            return
        for _ in range(8):  # a few reads a wake-up, so one fast upload cannot starve the others
            try:
                chunk = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(incoming)
                return
            if not chunk:  # the client went away
                self._drop(incoming)
                return
            incoming.data += chunk
            incoming.last_read = time.monotonic()
            if self._progress(incoming):
                return

    def _progress(self, incoming: _Incoming) -> bool:
        """Judge what has arrived; True when the request left the reading state (handed to a thread,
        refused or dropped)."""
        try:
            if incoming.header_end is None and not self._read_head(incoming):
                return False
            self._reserve(incoming, max(incoming.length or 0, len(incoming.data) - incoming.header_end))
            if not self._body_complete(incoming):
                return False
        except _Refusal as refusal:
            self._finish_reading(incoming)
            self.nr_conns -= 1
            self._refuse(incoming.conn.sock, refusal.answer)
            return True
        except _HandOff:
            pass
        self._finish_reading(incoming)
        conn = incoming.conn
        conn.buffered = incoming.data
        conn.reserved = incoming.reserved
        self._buffered += incoming.reserved  # held until the answer is written (finish_request)
        conn.data_ready = True
        self.enqueue_req(conn)
        return True

    def _read_head(self, incoming: _Incoming) -> bool:
        data = incoming.data
        while data.startswith(b"\r\n"):  # empty lines before a request line are allowed (RFC 9112)
            del data[:2]
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HEADER_BYTES:
                raise _Refusal(431, "headers_too_large",
                               f"the request line and headers are over {MAX_HEADER_BYTES // 1024} kB")
            return False
        if end > MAX_HEADER_BYTES:
            raise _Refusal(431, "headers_too_large",
                           f"the request line and headers are over {MAX_HEADER_BYTES // 1024} kB")
        lines = bytes(data[:end]).decode("latin-1").split("\r\n")
        target = lines[0].split(" ")
        incoming.path = urlsplit(target[1]).path if len(target) > 1 else ""  # absolute-form targets too
        lengths, codings, expect = [], [], False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                lengths.append(value)
            elif name == "transfer-encoding":
                codings.append(value.lower())
            elif name == "expect" and value.lower() == "100-continue":
                expect = True
        incoming.header_end = end + 4
        incoming.body_began = incoming.last_read = time.monotonic()
        if codings:
            if lengths or codings != ["chunked"]:
                raise _HandOff()
            incoming.chunked = True
            incoming.chunk_at = incoming.header_end
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                raise _HandOff()
            incoming.length = int(lengths[0])
        limit = self.limits.body_limit(incoming.path)
        if incoming.length is not None and incoming.length > limit:
            raise self._too_large(incoming, limit)
        if expect and (incoming.chunked or incoming.length):
            # Answered here, where the body is read; the line is taken out so that gunicorn does
            # not send a second 100 Continue once the body is already in.
            kept = [line for line in lines if not (line.lower().startswith("expect:")
                                                  and line.partition(":")[2].strip().lower() == "100-continue")]
            head = ("\r\n".join(kept) + "\r\n\r\n").encode("latin-1")
            data[:incoming.header_end] = head
            incoming.header_end = len(head)
            incoming.chunk_at = incoming.header_end
            try:
                incoming.conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass  # the client goes on after its own wait, or has gone; reading tells which
        return True

    def _too_large(self, incoming: _Incoming, limit: int) -> _Refusal:
        if incoming.path == VIDEO_PATH:
            return _Refusal(413, "video_too_large", f"the request body is over the limit for clips, "
                                                    f"{limit / (1024 * 1024):g} MB")
        return _Refusal(413, "payload_too_large", f"the request body is larger than the "
                                                  f"{limit / (1024 * 1024):g} MB limit")

    def _reserve(self, incoming: _Incoming, size: int) -> None:
        more = size - incoming.reserved
        if more <= 0:
            return
        if self._buffered + more > self.limits.max_buffer_bytes:
            raise _Refusal(503, "server_busy", "the server is reading as many uploads as it can hold; "
                                               "try again shortly", (("Retry-After", "2"),))
        self._buffered += more
        incoming.reserved += more

    def _body_complete(self, incoming: _Incoming) -> bool:
        data = incoming.data
        if not incoming.chunked:
            return len(data) - incoming.header_end >= (incoming.length or 0)
        limit = self.limits.body_limit(incoming.path)
        while True:
            line_end = data.find(b"\r\n", incoming.chunk_at)
            if line_end < 0:
                if len(data) - incoming.chunk_at > MAX_HEADER_BYTES:
                    raise _HandOff()
                return False
            if incoming.trailers:
                if line_end == incoming.chunk_at:
                    return True
                incoming.chunk_at = line_end + 2
                continue
            size_text = bytes(data[incoming.chunk_at:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _HandOff() from None
            if size == 0:
                incoming.trailers = True
                incoming.chunk_at = line_end + 2
                continue
            if len(data) - incoming.header_end > limit:
                raise self._too_large(incoming, limit)
            if len(data) < line_end + 2 + size + 2:
                return False
            incoming.chunk_at = line_end + 2 + size + 2

    def _finish_reading(self, incoming: _Incoming) -> None:
        del self._incoming[incoming.conn]
        self._buffered -= incoming.reserved
        try:
            self.poller.unregister(incoming.conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _drop(self, incoming: _Incoming) -> None:
        self._finish_reading(incoming)
        self.nr_conns -= 1
        incoming.conn.close()

    # ---- refusing -------------------------------------------------------------------------
    def _refuse(self, sock: socket.socket, answer: bytes) -> None:
        """Send ``answer``, close our side for writing, and drain what the client still sends for
        a while (closing with unread bytes would reset the connection and lose the answer)."""
        sock.setblocking(False)
        try:
            sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self._lingering) >= self.limits.max_connections:
            sock.close()
            return
        self._lingering[sock] = time.monotonic() + LINGER_S
        try:
            self.poller.register(sock, selectors.EVENT_READ, self._drain)
        except (KeyError, ValueError, OSError):
            self._lingering.pop(sock, None)
            sock.close()

    def _drain(self, sock: socket.socket) -> None:
        try:
            for _ in range(8):
                if not sock.recv(RECV_BYTES):
                    break
            else:
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close_lingering(sock)

    def _close_lingering(self, sock: socket.socket) -> None:
        self._lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        sock.close()

    # ---- deadlines (gthread's loop calls murder_pending every turn) ------------------------
    def wait_for_and_dispatch_events(self, timeout):
        if self.worker_connections == 0:  # giving way: wake up in time to accept again
            timeout = min(timeout, max(0.0, self._resume_at - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        if self.worker_connections == 0 and (now >= self._resume_at or self.nr_conns < self.limits.max_connections):
            self.worker_connections = ACCEPT_ALL  # gthread's loop accepts again on its next turn
        if not self.alive:
            for incoming in list(self._incoming.values()):
                self._drop(incoming)
        elif now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_S
        for incoming in list(self._incoming.values()):
            if now >= incoming.deadline(self.limits):
                self._finish_reading(incoming)
                self.nr_conns -= 1
                if incoming.header_end is None:
                    message = f"the request's headers did not arrive within {self.limits.header_timeout_s:g} s"
                else:
                    message = (f"the request body stalled (nothing for {self.limits.body_timeout_s:g} s, or under "
                               f"{MIN_BODY_RATE} bytes a second)")
                self._refuse(incoming.conn.sock, error_answer(408, "request_timeout", message))
        for sock, until in list(self._lingering.items()):
            if now >= until or not self.alive:
                self._close_lingering(sock)
