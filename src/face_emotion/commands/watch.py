"""`face-emotion watch SOURCE`: emotions of the faces in a camera or a live stream, as they happen.

The source is read by video.stream.LiveSource (a decoder thread, newest frame first, drops
counted) and analysed by the clip loop (video.analyse.ClipRun): the detector, optical-flow
follower, tracker and smoothing of `predict` on a clip, so a face keeps its track_id. Outputs
are written frame by frame; at the stream's end, after --max-seconds, or on Ctrl-C they are
finished (a playable MP4, a complete CSV and summary) and the exit status is 0. A source that
cannot be opened, or that stalls, ends with one line and exit status 1.
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
from pathlib import Path

import click

from face_emotion.commands.common import fail as _fail
from face_emotion.inference.backends import backend_names
from face_emotion.video.analyse import DEFAULT_DETECT_INTERVAL_S
from face_emotion.video.smoothing import DEFAULT_SMOOTH_S


# What watch needs of the video extra (its timeline plots are not used here).
@click.command()
@click.argument("source")
@click.option("--model", "model_path", help="Run folder, .safetensors or .onnx file (default: the bundled model).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON line per analysed frame on stdout, written as soon as the frame is done.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write one row per face per analysed frame to this file; - for stdout.")
@click.option("--annotate", "annotate_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Record the analysed frames with boxes and labels to this MP4 file.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path),
              help="At the end, write per-track summaries (JSON, as `predict --summary`) to this file.")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), help="Stop after this much stream time.")
@click.option("--realtime", is_flag=True,
              help="A file is played at its own pace, frames dropped when analysis falls behind, as from a "
                   "camera (default for files: every frame, as fast as they decode).")
@click.option("--every-frame", is_flag=True,
              help="Analyse every frame, falling behind a live source rather than dropping frames.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to wait for the source to open, and for each frame after.")
@click.option("--reconnect", type=click.IntRange(min=0), default=0, show_default=True,
              help="Network sources: reconnect this many times in a row when the stream ends, drops or stalls.")
@click.option("--format", "input_format",
              help="FFmpeg input format of the source (v4l2, avfoundation, dshow, ...; default: by its kind).")
@click.option("--no-detect", is_flag=True, help="Frames are face crops already: each whole frame is one face.")
@click.option("--detector", help="Face detector name (default: the package's default detector).")
@click.option("--tta", is_flag=True, help="Average each face's probabilities with its mirror image's.")
@click.option("--backend", type=click.Choice(backend_names()), help="Inference backend (default: onnxruntime).")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: every CPU available).")
@click.option("--sample-fps", type=click.FloatRange(min=0, min_open=True),
              help="Analyse at most this many frames a second (default: as many as keep up).")
@click.option("--smooth", "smooth_s", type=click.FloatRange(min=0), default=DEFAULT_SMOOTH_S, show_default=True,
              help="Time constant in seconds of each face's probability smoothing; 0 turns it off.")
@click.option("--detect-interval", "detect_interval_s", type=click.FloatRange(min=0),
              default=DEFAULT_DETECT_INTERVAL_S, show_default=True,
              help="Seconds between face detections; faces are followed by optical flow in between.")
def watch(source, model_path, as_json, csv_path, annotate_path, summary_path, max_seconds, realtime, every_frame,
          timeout_s, reconnect, input_format, no_detect, detector, tta, backend, threads, sample_fps, smooth_s,
          detect_interval_s) -> None:
    """Emotions of the faces in SOURCE, live: a camera index (0) or device (/dev/video0), an
    rtsp://, http(s):// (MPEG-TS, HLS, MJPEG), udp:// or tcp:// URL, or a video file.

    Always the newest frame is analysed; frames that arrive meanwhile are dropped and counted
    ("dropped"). --json lines have the fields of `predict --json` on a clip plus latency_ms
    (frame decoded to line written) and dropped. Without --json or --csv, a line per face is
    kept up to date on a terminal. Ctrl-C finishes every output and exits 0.
    """
    from face_emotion.errors import require_extra
    from face_emotion.inference.predictor import WHOLE_IMAGE, Predictor
    from face_emotion.video import VideoAnalyser, VideoOptions

    require_extra("video", "watch")
    if as_json and csv_path is not None and str(csv_path) == "-":
        _fail("--json and --csv - both write to stdout: choose one")
    if no_detect and detector not in (None, WHOLE_IMAGE):
        _fail("--no-detect and --detector are alternatives: choose one")
    if realtime and every_frame:
        _fail("--realtime and --every-frame are alternatives: choose one")
    options = VideoOptions(sample_fps=sample_fps, detect_interval_s=detect_interval_s, smooth_s=smooth_s)
    predictor = Predictor.load(model_path, detector=WHOLE_IMAGE if no_detect else detector, backend=backend, tta=tta,
                               num_threads=threads)
    VideoAnalyser(predictor, options).warm_up()  # before the stream starts running
    run = _Watch(predictor, source, options, as_json=as_json, csv_path=csv_path, annotate_path=annotate_path,
                 summary_path=summary_path, max_seconds=max_seconds)
    code = run.run(timeout_s=timeout_s, realtime=realtime, drop=False if every_frame else None, reconnect=reconnect,
                   input_format=input_format)
    if code:
        raise click.exceptions.Exit(code)


class _Watch:
    """One run of `watch`: the source, the clip loop and the outputs, finished however it ends."""

    def __init__(self, predictor, source: str, options, *, as_json: bool, csv_path: Path | None,
                 annotate_path: Path | None, summary_path: Path | None, max_seconds: float | None) -> None:
        self.predictor, self.source_text, self.options = predictor, source, options
        self.as_json, self.csv_path = as_json, csv_path
        self.annotate_path, self.summary_path, self.max_seconds = annotate_path, summary_path, max_seconds
        self.stop = threading.Event()
        self.csv_file = self.csv_writer = self.writer = None
        self.text = None if as_json or (csv_path is not None and str(csv_path) == "-") else _LiveText(sys.stdout)

    def run(self, *, timeout_s: float, realtime: bool, drop: bool | None, reconnect: int,
            input_format: str | None) -> int:
        from face_emotion.video.analyse import ClipRun
        from face_emotion.video.stream import LiveSource

        source = LiveSource(self.source_text, timeout_s=timeout_s, realtime=realtime, drop=drop, reconnect=reconnect,
                            on_event=lambda line: click.echo(line, err=True), format=input_format)
        previous = signal.getsignal(signal.SIGINT)

        def on_interrupt(signum, frame) -> None:
            # The first Ctrl-C ends the stream and finishes the outputs; a second one stops at once.
            self.stop.set()
            source.request_stop()
            signal.signal(signal.SIGINT, previous)

        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGINT, on_interrupt)
        clip = ClipRun(self.predictor, source, self.options, path=source.spec.text)
        try:
            self._open_outputs(source.info)
            analysed = 0
            latest = None
            items = iter(clip)
            try:
                for item in items:
                    if self.max_seconds is not None and item.decoded.time_s >= self.max_seconds:
                        break
                    if item.result is not None:
                        analysed += 1
                        latest = self._write(item)
                    if self.writer is not None and latest is not None:
                        self._record(item, latest)
            finally:
                items.close()  # the loop's own threads end here, before the outputs are finished
            self._finish(clip, source, analysed)
        except BaseException:
            if self.writer is not None:
                self.writer.abort()
                self.writer = None
            raise
        finally:
            if self.csv_file is not None and self.csv_file is not sys.stdout:
                self.csv_file.close()
            if in_main:
                signal.signal(signal.SIGINT, previous)
            source.request_stop()
            # After Ctrl-C the outputs are finished: the process need not wait for a decoder
            # blocked on a silent source (a daemon thread, it ends with the process).
            source.close(wait=not self.stop.is_set())
        if source.error is not None and not self.stop.is_set():
            click.echo(f"Error: {source.error.message}", err=True)
            return 1
        return 0

    # ---- outputs ------------------------------------------------------------------------------
    def _open_outputs(self, info) -> None:
        from face_emotion.video import csv_header
        from face_emotion.video.annotate import AnnotatedVideoWriter

        try:
            if self.csv_path is not None:
                dash = str(self.csv_path) == "-"
                self.csv_file = sys.stdout if dash else open(self.csv_path, "w", newline="", encoding="utf-8")
                self.csv_writer = csv.writer(self.csv_file)
                self.csv_writer.writerow(csv_header(self.predictor.classes))
            if self.annotate_path is not None:
                self.writer = AnnotatedVideoWriter(self.annotate_path, info.width, info.height, info.fps)
        except OSError as error:
            _fail(f"cannot write {error.filename}: {error.strerror}")

    def _write(self, item):
        from face_emotion.video.stream import with_latency

        result = with_latency(item)
        if self.as_json:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
            sys.stdout.flush()
        if self.csv_writer is not None:
            self.csv_writer.writerows(result.csv_rows(self.predictor.classes))
            self.csv_file.flush()
        if self.text is not None:
            self.text.show(result)
        return result

    def _record(self, item, latest) -> None:
        import numpy as np
        from PIL import Image

        from face_emotion.video.annotate import draw_frame

        self.writer.write(np.asarray(draw_frame(Image.fromarray(item.decoded.rgb), latest)), item.decoded.time_s)

    def _finish(self, clip, source, analysed: int) -> None:
        from face_emotion.commands.predict_video import summary_lines

        if self.writer is not None:
            self.writer.close()
            self.writer = None
        summary = clip.summary()
        if self.text is not None:
            self.text.end()
        if self.summary_path is not None:
            data = {**summary.to_dict(), "frames_decoded": clip.times.frames_decoded, "dropped": source.dropped}
            try:
                self.summary_path.write_text(json.dumps({"clips": [data]}, indent=1) + "\n", encoding="utf-8")
            except OSError as error:
                _fail(f"cannot write {self.summary_path}: {error.strerror}")
        if self.text is not None:
            for line in summary_lines(summary):
                self.text.out.write(line + "\n")
        how = {"end": "the stream ended", "stopped": "stopped", "stalled": "the stream stalled"}.get(
            source.end_reason or "stopped", source.end_reason)
        click.echo(f"{analysed} frames analysed over {summary.duration_s:.1f} s of stream, {source.dropped} dropped; "
                   f"{how}", err=True)


class _LiveText:
    """For people: a line per face. On a terminal the lines are rewritten in place each frame;
    elsewhere (a log, a pipe) a line is written when a face appears or its label changes."""

    def __init__(self, out) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.drawn = 0
        self.labels: dict = {}

    def show(self, result) -> None:
        faces = [(t.track_id, t.prediction) for t in result.faces]
        if self.tty:
            lines = [f"{result.time_s:7.1f} s  no face   (dropped {result.dropped})"] if not faces else [
                f"{result.time_s:7.1f} s  face {'-' if t is None else t}: {p.emotion:<10} {p.confidence:.2f}   "
                f"(dropped {result.dropped}, {result.latency_ms:.0f} ms)" for t, p in faces]
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines) + "\x1b[J")
            self.out.flush()
            self.drawn = len(lines)
            return
        for track, prediction in faces:
            if track is not None and self.labels.get(track) != prediction.emotion:
                self.labels[track] = prediction.emotion
                self.out.write(f"{result.time_s:.1f} s: face {track} {prediction.emotion} "
                               f"{prediction.confidence:.2f}\n")
                self.out.flush()

    def end(self) -> None:
        self.drawn = 0
