"""Idle, slow and stalled clients against a real `face-emotion serve`: the service stays available.

One server (gunicorn, one worker of two threads, short deadlines so that the tests are quick) on a
free loopback port. Each scenario holds more connections than the worker has threads, checks that
a normal client's /health and /predict answer within 2 s meanwhile, that the held connections get
their JSON 408 (or 503 past the cap), and that the service answers normally afterwards. Every
loop is bounded in count and time; every socket is closed at the end of its test.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest

from face_emotion.server.buffering import HoldLimits, error_answer
from face_emotion.server.config import ConfigError, RunOptions, ServerConfig, check_buffer
from support.images import encode, photo
from support.server import ServerProcess, free_port, multipart, serve_command

HEADER_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 2.0
KEEPALIVE_S = 2
MAX_CONNECTIONS = 32
MAX_BUFFER_MB = 2  # so that two uploads of 1 MB (the upload limit here) fill a worker's buffer
# The deadlines are checked about once a second: an answer is due within this much past its deadline.
SLACK_S = 2.5
NORMAL_S = 2.0  # what a normal client may wait while others are slow


# ---- settings (no server) ---------------------------------------------------------------------

def test_defaults_hold_a_few_hundred_connections_and_bound_the_waits():
    options = RunOptions()
    assert options.max_connections >= 200
    assert 0 < options.header_timeout_s <= 30 and 0 < options.body_timeout_s <= 30
    assert 0 < options.keepalive_s <= 15
    check_buffer(ServerConfig(), options)  # the default buffer holds the largest default upload


def test_settings_are_checked_and_name_their_flag_and_variable():
    with pytest.raises(ConfigError, match="--header-timeout / FACE_EMOTION_HEADER_TIMEOUT_S"):
        RunOptions(header_timeout_s=0)
    with pytest.raises(ConfigError, match="--max-connections"):
        RunOptions(max_connections=0)
    with pytest.raises(ConfigError, match="FACE_EMOTION_MAX_BUFFER_MB"):
        check_buffer(ServerConfig(max_video_mb=300), RunOptions())
    options = RunOptions.from_env({"FACE_EMOTION_BODY_TIMEOUT_S": "4.5", "FACE_EMOTION_MAX_CONNECTIONS": "64"})
    assert (options.body_timeout_s, options.max_connections) == (4.5, 64)


def test_front_answers_are_json_errors_that_close_the_connection():
    answer = error_answer(408, "request_timeout", "too slow")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close" in head and b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"error": {"code": "request_timeout", "message": "too slow"}}
    limits = HoldLimits(max_upload_bytes=10, max_video_bytes=50)
    assert (limits.body_limit("/predict"), limits.body_limit("/predict/video")) == (10, 50)


# ---- a real server ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    port = free_port()
    command = serve_command(port, "--model", str(tiny_model_dir), "--workers", "1", "--threads", "2",
                            "--inference-threads", "1", "--detector", "none",
                            "--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S),
                            "--keepalive", str(KEEPALIVE_S), "--max-connections", str(MAX_CONNECTIONS),
                            "--max-upload-mb", "1")
    env = {"FACE_EMOTION_MAX_VIDEO_MB": "1", "FACE_EMOTION_MAX_BUFFER_MB": str(MAX_BUFFER_MB)}
    process = ServerProcess(command, port, tmp_path_factory.mktemp("slow-clients") / "serve.log", env=env,
                            name="serve")
    try:
        process.start(timeout_s=120)
    except RuntimeError as error:
        pytest.fail(str(error))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return encode(photo(128), "JPEG", quality=85)


class Sockets:
    """Raw client connections, all closed when the test ends."""

    def __init__(self, port: int):
        self.port = port
        self.open: list[socket.socket] = []

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self.open.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.open:
            sock.close()
        self.open.clear()


@pytest.fixture
def sockets(server):
    held = Sockets(server.port)
    yield held
    held.close()


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict, bytes] | None:
    """The next final answer on ``sock`` (1xx skipped): (status, headers, body); None when the
    server closed the connection without one or nothing came within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            lines = data[:end].decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            rest = data[end + 4:]
            if 100 <= status < 200:
                data = rest
                continue
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = _recv(sock, deadline)
                if not chunk:
                    return None
                rest += chunk
            return status, headers, rest[:length]
        chunk = _recv(sock, deadline)
        if not chunk:
            return None
        data += chunk


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return b""
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except (TimeoutError, ConnectionError):
        return b""


def request_bytes(method: str, path: str, body: bytes = b"", content_type: str = "image/jpeg",
                  extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}"
    if body or method == "POST":
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def normal_client(server, jpeg: bytes) -> dict[str, tuple[int, float]]:
    """What a normal client gets while others are slow: (status, seconds) of /health and /predict."""
    import http.client

    result = {}
    for name, method, path, body in (("health", "GET", "/health", None), ("predict", "POST", "/predict", jpeg)):
        start = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=NORMAL_S + 3)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "image/jpeg"} if body else {})
            response = connection.getresponse()
            response.read()
            result[name] = (response.status, time.monotonic() - start)
        except OSError as error:
            result[name] = (type(error).__name__, time.monotonic() - start)
        finally:
            connection.close()
    return result


def assert_normal(server, jpeg: bytes) -> None:
    answers = normal_client(server, jpeg)
    for status, seconds in answers.values():
        assert status == 200 and seconds < NORMAL_S, answers


def assert_error(answer, status: int, code: str) -> None:
    assert answer is not None, f"no answer where {status} {code} was due"
    got_status, headers, body = answer
    assert got_status == status and headers["content-type"] == "application/json", (got_status, headers, body)
    assert json.loads(body)["error"]["code"] == code
    assert headers.get("connection") == "close"


def trickle(sockets: list[socket.socket], pieces, interval_s: float, stop_after_s: float) -> threading.Thread:
    """Send pieces[i] to every socket each ``interval_s`` from a thread, for at most ``stop_after_s``;
    a socket the server closed is left alone."""
    def run():
        alive = list(sockets)
        end = time.monotonic() + stop_after_s
        for piece in pieces:
            if time.monotonic() >= end or not alive:
                return
            for sock in list(alive):
                try:
                    sock.sendall(piece)
                except OSError:
                    alive.remove(sock)
            time.sleep(interval_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_idle_connections_do_not_block_others_and_get_408(server, sockets, jpeg):
    idle = [sockets.connect() for _ in range(24)]  # twelve times the worker's threads
    time.sleep(0.3)
    assert_normal(server, jpeg)
    started = time.monotonic()
    answers = [read_answer(sock, HEADER_TIMEOUT_S + SLACK_S) for sock in idle]
    for answer in answers:
        assert_error(answer, 408, "request_timeout")
    assert time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S
    assert all(_recv(sock, time.monotonic() + 2) == b"" for sock in idle)  # and closed
    assert_normal(server, jpeg)


@pytest.mark.slow
def test_slow_headers_do_not_block_others_and_get_408(server, sockets, jpeg):
    slow = [sockets.connect() for _ in range(8)]
    lines = [b"POST /predict HTTP/1.1\r\n"] + [f"X-Slow-{i}: {i}\r\n".encode() for i in range(40)]
    sender = trickle(slow, lines, 0.4, HEADER_TIMEOUT_S + SLACK_S + 2)
    time.sleep(0.5)
    assert_normal(server, jpeg)
    for sock in slow:
        assert_error(read_answer(sock, HEADER_TIMEOUT_S + SLACK_S), 408, "request_timeout")
    sender.join(HEADER_TIMEOUT_S + SLACK_S + 5)
    assert_normal(server, jpeg)


@pytest.mark.slow
def test_slow_and_stalled_bodies_do_not_block_others_and_get_408(server, sockets, jpeg):
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    trickling = [sockets.connect() for _ in range(6)]
    stalled = [sockets.connect() for _ in range(2)]
    for sock in stalled:
        sock.sendall(head + jpeg[:1000])  # then nothing
    sender = trickle(trickling, [head] + [b"x" * 50] * 100, 0.3, BODY_TIMEOUT_S * 3 + SLACK_S)
    time.sleep(0.5)
    assert_normal(server, jpeg)
    for sock in stalled + trickling:
        # Trickling at ~170 bytes/s is under the minimum rate: cut off a little after the stall.
        assert_error(read_answer(sock, BODY_TIMEOUT_S * 2 + SLACK_S), 408, "request_timeout")
    sender.join(BODY_TIMEOUT_S * 3 + SLACK_S + 5)
    assert_normal(server, jpeg)


@pytest.mark.slow
def test_a_flood_past_the_cap_gets_503_and_the_service_recovers(server, sockets, jpeg):
    flood = [sockets.connect() for _ in range(MAX_CONNECTIONS + 8)]
    # Within the header deadline only the connections past the cap have an answer to read (each
    # after the worker's pause to give way, under a second).
    readable: list[socket.socket] = []
    deadline = time.monotonic() + HEADER_TIMEOUT_S - 0.5
    while len(readable) < 8 and time.monotonic() < deadline:
        readable = select.select(flood, [], [], 0.1)[0]
    got = [read_answer(sock, 1.0) for sock in readable]
    assert len(got) == 8, f"{len(got)} of {len(flood)} connections were answered at once"
    for answer in got:
        assert_error(answer, 503, "too_many_connections")
        assert answer[1]["retry-after"] == "1"
    newcomer = sockets.connect()
    newcomer.sendall(request_bytes("GET", "/health"))
    assert_error(read_answer(newcomer, 2.0), 503, "too_many_connections")
    for sock in flood:
        sock.close()
    deadline = time.monotonic() + 5
    while normal_client(server, jpeg)["health"][0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_normal(server, jpeg)


@pytest.mark.slow
def test_an_idle_kept_alive_connection_is_closed_quietly(server, sockets):
    sock = sockets.connect()
    sock.sendall(request_bytes("GET", "/health"))
    status, headers, _ = read_answer(sock, 5)
    assert status == 200 and headers.get("connection", "").lower() != "close"
    started = time.monotonic()
    assert _recv(sock, started + KEEPALIVE_S + SLACK_S) == b""  # closed, with no answer sent
    assert time.monotonic() - started < KEEPALIVE_S + SLACK_S


@pytest.mark.slow
def test_a_slow_clip_upload_does_not_block_photos(server, sockets, jpeg):
    body, content_type = multipart([("video", "clip.mp4", b"\0not a clip" * 4000)])
    head = (f"POST /predict/video HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    upload = sockets.connect()
    pieces = [head] + [body[i:i + 4096] for i in range(0, len(body), 4096)]  # about 4 s at 12 kB/s
    sender = trickle([upload], pieces, 0.33, 10)
    time.sleep(0.5)
    for _ in range(3):
        assert_normal(server, jpeg)
    sender.join(12)
    # Read to its end, the clip is judged by the app: a JSON answer, not a timeout.
    answer = read_answer(upload, 10)
    assert answer is not None and answer[0] == 400, answer
    assert json.loads(answer[2])["error"]["code"] in {"invalid_video", "no_video"}


@pytest.mark.slow
def test_requests_read_ahead_still_arrive_whole(server, sockets, jpeg):
    # A steady upload in pieces, under the deadlines, is answered.
    sock = sockets.connect()
    whole = request_bytes("POST", "/predict", jpeg)
    for i in range(0, len(whole), len(whole) // 4 + 1):
        sock.sendall(whole[i:i + len(whole) // 4 + 1])
        time.sleep(0.3)
    assert read_answer(sock, 5)[0] == 200
    # Expect: 100-continue: the 100 comes once the headers are in, the answer after the body.
    sock = sockets.connect()
    sock.sendall(request_bytes("POST", "/predict", jpeg, extra="Expect: 100-continue\r\n")[:-len(jpeg)])
    assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(jpeg)
    answer = read_answer(sock, 5)
    assert answer[0] == 200 and b"100 Continue" not in answer[2]
    # A chunked body.
    sock = sockets.connect()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(jpeg[i:i + 3000]), jpeg[i:i + 3000]) for i in range(0, len(jpeg), 3000))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + chunks + b"0\r\n\r\n")
    assert read_answer(sock, 5)[0] == 200
    # Two pipelined requests on one connection: two answers, in order.
    sock = sockets.connect()
    sock.sendall(request_bytes("POST", "/predict", jpeg) + request_bytes("GET", "/health"))
    first, second = read_answer(sock, 5), read_answer(sock, 5)
    assert first[0] == 200 and "faces" in json.loads(first[2])
    assert second[0] == 200 and json.loads(second[2])["status"] == "ok"


@pytest.mark.slow
def test_a_body_over_its_route_limit_is_refused_before_it_is_sent(server, sockets):
    sock = sockets.connect()
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 20000000\r\n\r\n")
    assert_error(read_answer(sock, 2), 413, "payload_too_large")
    sock = sockets.connect()
    sock.sendall(b"POST /predict/video HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 60000000\r\n\r\n")
    assert_error(read_answer(sock, 2), 413, "video_too_large")
    sock = sockets.connect()
    sock.sendall(b"GET /health HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert_error(read_answer(sock, 2), 431, "headers_too_large")


@pytest.mark.slow
def test_uploads_past_the_worker_buffer_get_503_until_it_empties(server, sockets, jpeg):
    def head(length: int) -> bytes:
        return (f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()

    filling = [sockets.connect() for _ in range(2)]
    for sock in filling:  # each declares (and so reserves) nearly 1 MB, then sends a little of it
        sock.sendall(head(1000 * 1024) + b"x" * 100)
    time.sleep(0.5)
    third = sockets.connect()
    third.sendall(head(200 * 1024))
    answer = read_answer(third, 2)
    assert_error(answer, 503, "server_busy")
    assert answer[1]["retry-after"]
    for sock in filling:  # gone: their reservations are released
        sock.close()
    time.sleep(0.5)
    upload = sockets.connect()
    upload.sendall(head(len(jpeg)) + jpeg)
    assert read_answer(upload, 5)[0] == 200
