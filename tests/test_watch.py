"""`face-emotion watch` and FaceEmotion.stream on live sources served here, on loopback only: a
generated two-face clip as MPEG-TS over HTTP, paced at its own rate (video/replay.py), a source
that stalls, one that drops mid-stream, Ctrl-C during --annotate, a file played in real time,
and each kind of bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from support.clips import crossing_faces_clip, default_detector_available

av = pytest.importorskip("av")

from face_emotion.cli import main  # noqa: E402
from face_emotion.video.replay import LiveServer, clip_frames, encode_ts  # noqa: E402

pytestmark = pytest.mark.skipif(not default_detector_available(), reason="the default face detector is not installed")

LINE_KEYS = ["path", "frame", "time_s", "emotion", "confidence", "faces", "image", "error", "model", "elapsed_ms",
             "latency_ms", "dropped"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return crossing_faces_clip(tmp_path_factory.mktemp("live") / "crossing.mp4")


@pytest.fixture(scope="module")
def stream(clip):
    """The clip twice over (6 s) as MPEG-TS, and where each frame's bytes start."""
    frames, fps = clip_frames(clip)
    data, chunks, seconds = encode_ts(frames, fps, loops=2)
    return data, chunks, seconds


def _watch(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "face_emotion", "watch", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return done, time.monotonic() - start


def _our_threads() -> list[str]:
    """The threads a live source and the clip loop start (decoder, opener, classifier)."""
    return [t.name for t in threading.enumerate() if t.name.startswith(("face-emotion-live", "face-emotion-classify"))]


# ------------------------------------------------------------------------------------------ the CLI
def test_watch_a_live_http_stream(stream, tiny_model_dir, tmp_path):
    data, chunks, seconds = stream
    table, summary = tmp_path / "rows.csv", tmp_path / "summary.json"
    with LiveServer(data, chunks) as server:
        done, took = _watch(server.url(), "--model", str(tiny_model_dir), "--threads", "1", "--json",
                            "--csv", str(table), "--summary", str(summary))
    assert done.returncode == 0, done.stderr
    assert took < seconds + 30  # it ends with the stream
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) >= 10
    assert all(list(line) == LINE_KEYS for line in lines)
    assert all(line["path"] == server.url() and line["model"] == "tiny-test-model" for line in lines)
    times = [line["time_s"] for line in lines]
    assert times == sorted(times) and times[-1] > seconds - 1.5
    assert [line["dropped"] for line in lines] == sorted(line["dropped"] for line in lines)
    assert all(line["latency_ms"] >= 0 and line["elapsed_ms"] >= 0 for line in lines)
    faces = [face for line in lines for face in line["faces"]]
    assert set(faces[0]) == {"track_id", "box", "score", "emotion", "confidence", "probabilities"}
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == sum(max(1, len(line["faces"])) for line in lines)
    assert [row["frame"] for row in rows][:1] == [str(lines[0]["frame"])]
    written = json.loads(summary.read_text())["clips"][0]
    assert written["frames_analysed"] == len(lines) and written["video"]["container"] == "mpegts"
    assert written["tracks"] and written["dropped"] == lines[-1]["dropped"]
    assert "the stream ended" in done.stderr.splitlines()[-1]


def test_plain_text_without_a_terminal_says_when_a_face_appears_or_changes(stream, tiny_model_dir):
    data, chunks, _ = stream
    with LiveServer(data, chunks) as server:
        done, _ = _watch(server.url(), "--model", str(tiny_model_dir), "--threads", "1", "--max-seconds", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and " face 1 " in lines[0]
    assert any("frames analysed over" in line for line in lines)  # the summary of the tracks


def test_live_text_on_a_terminal_rewrites_its_lines_in_place():
    import io

    from face_emotion.commands.watch import _LiveText
    from face_emotion.inference.results import Box, FacePrediction, ImageResult
    from face_emotion.video.results import FrameResult

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def frame(time_s, labels):
        faces = [FacePrediction.of(Box(10 * i, 0, 8, 8), 0.9, [0.8, 0.2] if label == "a" else [0.3, 0.7], ("a", "b"))
                 for i, label in enumerate(labels)]
        return FrameResult(0, time_s, ImageResult.of((64, 64), faces), tuple(range(1, len(labels) + 1)), True,
                           latency_ms=5.0, dropped=2)

    out = Terminal()
    text = _LiveText(out)
    text.show(frame(0.5, ["a", "b"]))
    first = out.getvalue()
    text.show(frame(0.6, ["b"]))
    second = out.getvalue()[len(first):]
    assert first.count("\n") == 2 and "face 1: a" in first and "face 2: b" in first
    # Two lines up, then rewritten.
    assert second.startswith("\x1b[2F") and second.endswith("\x1b[J") and "face 1: b" in second

    log = io.StringIO()  # not a terminal: a line when a face appears or changes its label
    text = _LiveText(log)
    for t, labels in ((0.1, ["a"]), (0.2, ["a"]), (0.3, ["b"])):
        text.show(frame(t, labels))
    assert log.getvalue().splitlines() == ["0.1 s: face 1 a 0.80", "0.3 s: face 1 b 0.70"]


def test_a_source_that_stalls_ends_within_the_timeout(stream, tiny_model_dir, tmp_path):
    data, chunks, _ = stream
    with LiveServer(data, chunks, stall_after_s=1.5) as server:
        done, took = _watch(server.url("stall.ts"), "--model", str(tiny_model_dir), "--threads", "1", "--json",
                            "--timeout", "2", "--summary", str(tmp_path / "s.json"))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == f"Error: {server.url('stall.ts')} sent no frame for 2 s"
    assert "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines and lines[-1]["time_s"] < 1.6
    assert json.loads((tmp_path / "s.json").read_text())["clips"][0]["frames_analysed"] == len(lines)
    assert took < 25


def test_a_stream_that_drops_is_reconnected(stream, tiny_model_dir):
    data, chunks, seconds = stream
    with LiveServer(data, chunks, drop_after_s=2.0) as server:
        done, _ = _watch(server.url("drop.ts"), "--model", str(tiny_model_dir), "--threads", "1", "--json",
                         "--reconnect", "2")
        connections = list(server.connections)
    assert done.returncode == 0, done.stderr
    # Dropped at 2 s and reconnected; at the stream's end the retries find it over (404) and give up.
    assert connections.count("/drop.ts") == 4
    assert f"{server.url('drop.ts')} ended: reconnecting (1 of 2)" in done.stderr
    assert "gave up after 2 reconnection attempts" in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    times = [line["time_s"] for line in lines]
    assert times == sorted(times) and max(times) > 3.0 > 2.0 > min(times)  # one stream time, before and after
    frames = [line["frame"] for line in lines]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)


def test_ctrl_c_during_annotate_finishes_every_output(stream, tiny_model_dir, tmp_path):
    data, chunks, _ = stream
    video, table, summary = tmp_path / "out.mp4", tmp_path / "rows.csv", tmp_path / "s.json"
    with LiveServer(data, chunks) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "face_emotion", "watch", server.url(), "--model", str(tiny_model_dir), "--threads",
             "1", "--json", "--annotate", str(video), "--csv", str(table), "--summary", str(summary)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        lines = []
        try:
            while len(lines) < 8:
                line = process.stdout.readline()
                assert line, process.stderr.read()
                lines.append(json.loads(line))
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err.splitlines()[-1]
    lines += [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["time_s"] < 5.5  # it stopped before the stream's end
    with av.open(str(video)) as container:  # a playable MP4: its index was written
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) >= len(lines) - 1 and decoded[0].shape[:2] == (270, 480)
    rows = list(csv.DictReader(table.open()))
    assert rows[-1]["status"] in ("ok", "no face") and int(rows[-1]["frame"]) == lines[-1]["frame"]
    assert json.loads(summary.read_text())["clips"][0]["frames_analysed"] == len(lines)
    assert not list(tmp_path.glob(".*partial"))


def test_a_file_in_real_time_and_as_fast_as_it_decodes(clip, tiny_model_dir):
    done, took = _watch(str(clip), "--model", str(tiny_model_dir), "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr
    every = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["frame"] for line in every] == list(range(75)) and every[-1]["dropped"] == 0
    start = time.monotonic()
    done, _ = _watch(str(clip), "--model", str(tiny_model_dir), "--threads", "1", "--json", "--realtime")
    assert done.returncode == 0, done.stderr
    paced = [json.loads(line) for line in done.stdout.splitlines()]
    assert time.monotonic() - start > 3.0  # at least the clip's 3 s
    assert paced[-1]["time_s"] == pytest.approx(2.96) and len(paced) + paced[-1]["dropped"] == 75


# ---------------------------------------------------------------------------------------- bad input
class _Silent:
    """A TCP port that accepts connections and never answers."""

    def __enter__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}/live.ts"

    def __exit__(self, *exc):
        self.socket.close()


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/live.ts"


@pytest.mark.parametrize("case", ["refused", "no answer", "missing camera", "camera index", "html page",
                                  "text file", "photo", "missing file", "unknown scheme"])
def test_each_bad_input_is_one_line_within_the_timeout(case, stream, tiny_model_dir, tmp_path):
    from PIL import Image

    data, chunks, _ = stream
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 100)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(photo)
    expected = {"refused": "connection was refused", "no answer": "no answer within 2 s",
                "missing camera": "no camera at /dev/video97", "camera index": "no camera at /dev/video98",
                "html page": "not a video stream", "text file": "not a video stream (unknown file type)",
                "photo": "not a video stream (it is a PNG image)",
                "missing file": "no such file, camera index, device or stream URL",
                "unknown scheme": "ftp:// is not a stream"}[case]
    with LiveServer(data, chunks) as server, _Silent() as silent:
        source = {"refused": _closed_port(), "no answer": silent, "missing camera": "/dev/video97",
                  "camera index": "98", "html page": server.url("page.html"), "text file": str(text),
                  "photo": str(photo), "missing file": str(tmp_path / "gone.mp4"),
                  "unknown scheme": "ftp://127.0.0.1/x.ts"}[case]
        start = time.monotonic()
        result = CliRunner().invoke(main, ["watch", source, "--model", str(tiny_model_dir), "--threads", "1",
                                           "--timeout", "2"])
        took = time.monotonic() - start
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.output
    assert took < 2 + 15  # the model's loading included


def test_a_password_in_the_url_is_never_shown(stream, tiny_model_dir):
    from face_emotion.video.stream import parse_source

    assert parse_source("rtsp://admin:s3cret@10.0.0.5:554/live").text == "rtsp://admin:***@10.0.0.5:554/live"
    data, chunks, _ = stream
    with LiveServer(data, chunks) as server:
        url = server.url().replace("http://", "http://viewer:s3cret@")
        done, _ = _watch(url, "--model", str(tiny_model_dir), "--threads", "1", "--json", "--max-seconds", "1.5")
        refused = CliRunner().invoke(main, ["watch", _closed_port().replace("http://", "http://viewer:s3cret@"),
                                            "--model", str(tiny_model_dir), "--timeout", "2"])
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr and "viewer:***@" in done.stdout
    assert refused.exit_code == 1 and "s3cret" not in refused.output and "viewer:***@" in refused.output


def test_watch_without_the_video_extra_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("av", "trackers", "supervision")
                        else real(name, *a))
    result = CliRunner().invoke(main, ["watch", "0"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: watch needs the 'video' extra: pip install 'face-emotion-kit[video]'"


# -------------------------------------------------------------------------------------- the Python API
def test_stream_yields_frame_results_and_stops_cleanly(stream, tiny_model_dir):
    from face_emotion import FaceEmotion

    data, chunks, seconds = stream
    model = FaceEmotion(tiny_model_dir, num_threads=1)
    with LiveServer(data, chunks) as server:
        results = list(model.stream(server.url()))
    assert len(results) >= 10 and not _our_threads()
    assert results[-1].time_s > seconds - 1.5
    assert all(r.latency_ms is not None and r.dropped is not None for r in results)
    assert results[5].to_dict()["model"] == "tiny-test-model"
    assert {t for r in results for t in r.track_ids} >= {1, 2}

    with LiveServer(data, chunks) as server:
        for count, _ in enumerate(model.stream(server.url()), 1):  # a loop that breaks
            if count == 3:
                break
        assert not _our_threads()
        frames = model.stream(server.url(), max_seconds=30)
        first = next(frames)
        assert first.image.model == "tiny-test-model" and _our_threads()
        frames.close()
        assert not _our_threads()
        short = list(model.stream(server.url(), max_seconds=1.0))
        assert short and short[-1].time_s < 1.0 + 3.0


def _paced(send, data, chunks, stop: threading.Event) -> None:
    """The stream's bytes handed to ``send`` at their times, as a live encoder hands them over."""
    start = time.monotonic()
    send(data[: chunks[0].offset])
    for i, chunk in enumerate(chunks):
        if stop.wait(max(0.0, start + chunk.time_s - time.monotonic())):
            return
        send(data[chunk.offset: chunks[i + 1].offset if i + 1 < len(chunks) else len(data)])


def test_stream_over_udp_and_tcp(stream, tiny_model_dir):
    """MPEG-TS sent to a UDP port (silence after it is its end) and served by a TCP socket."""
    from face_emotion import FaceEmotion

    data, chunks, seconds = stream
    model = FaceEmotion(tiny_model_dir, num_threads=1)
    stop = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        def datagrams(piece: bytes) -> None:
            for at in range(0, len(piece), 1316):  # 7 TS packets a datagram, as FFmpeg sends them
                out.sendto(piece[at: at + 1316], ("127.0.0.1", port))

        sender = threading.Thread(target=lambda: (stop.wait(1.0), _paced(datagrams, data, chunks, stop)))
        sender.start()
        try:
            over_udp = list(model.stream(f"udp://127.0.0.1:{port}", timeout_s=3))
        finally:
            stop.set()
            sender.join()
    assert len(over_udp) >= 10 and over_udp[-1].time_s > seconds - 2.5 and not _our_threads()

    stop.clear()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                try:
                    _paced(connection.sendall, data, chunks, stop)
                except OSError:
                    pass

        sender = threading.Thread(target=serve)
        sender.start()
        try:
            over_tcp = list(model.stream(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout_s=5))
        finally:
            stop.set()
            sender.join()
    assert len(over_tcp) >= 10 and over_tcp[-1].time_s > seconds - 1.5 and not _our_threads()
    assert {t for r in over_tcp for t in r.track_ids} >= {1, 2}


def test_stream_raises_for_a_source_it_cannot_open(tiny_model_dir):
    from face_emotion import FaceEmotion, FaceEmotionError

    with pytest.raises(FaceEmotionError, match="connection was refused"):
        FaceEmotion(tiny_model_dir, num_threads=1).stream(_closed_port(), timeout_s=2)
    assert not _our_threads()
