"""Video: decoding and its errors, tracking (ids that hold, boxes that follow), smoothing,
summaries, and `face-emotion predict` on clips. Clips are generated here (tests/video_clips.py)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from support.clips import (
    astronaut_face,
    audio_only_file,
    blank_clip,
    crossing_faces_clip,
    default_detector_available,
    moving_face_clip,
    write_clip,
)

av = pytest.importorskip("av")

from face_emotion.cli import main  # noqa: E402
from face_emotion.video import (  # noqa: E402
    NoVideoStreamError,
    VideoDecodeError,
    VideoLimits,
    VideoOptions,
    VideoSource,
    VideoTooLargeError,
    analyse_video,
    summarise,
)
from face_emotion.video.decode import sniff_container  # noqa: E402
from face_emotion.video.smoothing import ProbabilitySmoother, ema_weight  # noqa: E402

needs_detector = pytest.mark.skipif(not default_detector_available(),
                                    reason="the default face detector is not installed")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    moving, truth = moving_face_clip(root / "moving.mp4")
    return {
        "moving": moving, "truth": truth,
        "crossing": crossing_faces_clip(root / "crossing.mp4"),
        "blank": blank_clip(root / "blank.mp4"),
        "audio": audio_only_file(root / "audio.mp4"),
        "root": root,
    }


# ---------------------------------------------------------------------------------------- decoding
def test_decoding_gives_every_frame_with_its_time(clips):
    with VideoSource(clips["moving"]) as video:
        assert (video.info.width, video.info.height, video.info.fps, video.info.frames) == (400, 240, 25.0, 50)
        frames = list(video.frames())
    assert len(frames) == 50
    assert [f.index for f in frames] == list(range(50))
    assert np.allclose([f.time_s for f in frames], np.arange(50) / 25.0, atol=1e-6)
    assert frames[0].rgb.shape == (240, 400, 3) and frames[0].rgb.dtype == np.uint8


def test_bytes_and_files_decode_alike(clips):
    data = clips["moving"].read_bytes()
    with VideoSource(data) as from_bytes, VideoSource(clips["moving"]) as from_file:
        a, b = next(from_bytes.frames()).rgb, next(from_file.frames()).rgb
    assert np.array_equal(a, b)


def test_containers_are_recognised_by_their_bytes(tmp_path):
    frames = [np.full((64, 64, 3), 128, np.uint8)] * 3
    webm = write_clip(tmp_path / "a.webm", frames, codec="libvpx-vp9")
    assert sniff_container(webm.read_bytes()[:64]) == "matroska"
    with VideoSource(webm) as video:
        assert video.info.codec == "vp9" and len(list(video.frames())) == 3
    assert sniff_container(b"#EXTM3U\n#EXT-X-VERSION:3\n") is None  # a playlist is never followed


@pytest.mark.parametrize("case, code, words", [
    ("empty", "invalid_video", "empty"),
    ("image", "invalid_video", "PNG image"),
    ("truncated", "invalid_video", "truncated"),
    ("garbage", "invalid_video", "not a video"),
    ("broken_header", "invalid_video", "damaged"),
    ("audio", "no_video_stream", "no video stream"),
])
def test_bad_clips_are_refused_with_a_reason(clips, case, code, words):
    data = clips["moving"].read_bytes()
    if case == "empty":
        source = b""
    elif case == "image":
        buffer = io.BytesIO()
        astronaut_face().save(buffer, format="PNG")
        source = buffer.getvalue()
    elif case == "truncated":
        source = data[: len(data) * 6 // 10]
    elif case == "garbage":
        source = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    elif case == "broken_header":
        source = data[:32] + bytes(len(data) - 32)  # an MP4 signature, then zeros
    else:
        source = clips["audio"].read_bytes()
    with pytest.raises(VideoDecodeError) as caught:
        with VideoSource(source) as video:
            list(video.frames())
    assert caught.value.code == code
    assert words in str(caught.value)
    if case == "audio":
        assert isinstance(caught.value, NoVideoStreamError)


@pytest.mark.parametrize("limits, code", [
    (VideoLimits(max_bytes=1000), "video_too_large"),
    (VideoLimits(max_duration_s=1.0), "video_too_long"),
    (VideoLimits(max_pixels=320 * 200), "video_resolution_too_large"),
])
def test_limits_are_checked_before_decoding(clips, limits, code):
    # The constructor reads only the container header: it must refuse before any frame is decoded.
    with pytest.raises(VideoTooLargeError) as caught:
        VideoSource(clips["moving"].read_bytes(), limits)
    assert caught.value.code == code


def test_a_clip_within_the_limits_passes(clips):
    limits = VideoLimits(max_bytes=10_000_000, max_duration_s=2.5, max_pixels=400 * 240)
    with VideoSource(clips["moving"], limits) as video:
        assert len(list(video.frames())) == 50


# ---------------------------------------------------------------------------------------- tracking
@needs_detector
def test_a_moving_face_keeps_one_id_and_its_box_follows_it(clips, predictor):
    frames = list(analyse_video(predictor, clips["moving"]))
    assert len(frames) == 50
    assert sum(f.detected for f in frames) < 25  # the detector ran on only some frames ...
    ids = {face.track_id for f in frames for face in f.faces}
    assert ids == {1}  # ... one person, one id, from the face's first frame on (it used to be None there)
    for f in frames:
        assert len(f.faces) == 1
        box = f.faces[0].prediction.box
        x, y, w, h = clips["truth"][f.frame]
        # ... and on followed frames too the box stays on the face (which moves 7 px a frame).
        assert abs(box.x + box.width / 2 - (x + w / 2)) < 12, f.frame
        assert abs(box.y + box.height / 2 - (y + h / 2)) < 12, f.frame


@needs_detector
def test_two_faces_crossing_paths_keep_their_ids(clips, predictor):
    frames = list(analyse_video(predictor, clips["crossing"]))
    upper_ids, lower_ids, both = set(), set(), 0
    for f in frames:
        tracked = [face for face in f.faces if face.track_id is not None]
        if len(tracked) != 2:
            continue
        both += 1
        upper, lower = sorted(tracked, key=lambda face: face.prediction.box.y)
        upper_ids.add(upper.track_id)
        lower_ids.add(lower.track_id)
    assert both >= len(frames) - 3  # both faces are seen through the crossing
    assert len(upper_ids) == 1 and len(lower_ids) == 1 and upper_ids != lower_ids
    # The upper face really went from the left to the right (so the test saw a crossing).
    first = min(frames[1].faces, key=lambda face: face.prediction.box.y).prediction.box.x
    last = min(frames[-1].faces, key=lambda face: face.prediction.box.y).prediction.box.x
    assert first < 100 and last > 300


@needs_detector
def test_sample_fps_analyses_fewer_frames(clips, predictor):
    frames = list(analyse_video(predictor, clips["moving"], VideoOptions(sample_fps=5)))
    assert [f.frame for f in frames] == list(range(0, 50, 5))


@needs_detector
def test_a_clip_without_faces_gives_frames_without_faces(clips, predictor):
    frames = list(analyse_video(predictor, clips["blank"]))
    assert len(frames) == 20 and all(f.faces == () for f in frames)
    summary = summarise(frames, predictor.classes)
    assert summary.tracks == () and summary.dominant_emotion is None


# --------------------------------------------------------------------------------------- smoothing
def test_smoothing_has_the_documented_time_constant():
    smoother = ProbabilitySmoother(smooth_s=0.5)
    before, after = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    smoother.update(1, 0.0, before)
    # 30 fps for half a second: 63% of the way, whatever the frame rate.
    for k in range(1, 16):
        out = smoother.update(1, k / 30, after)
    assert out[1] == pytest.approx(1 - np.exp(-1), abs=1e-9)
    assert ema_weight(0.1, 0) == 1.0 and ProbabilitySmoother(0).update(1, 0.0, before) is not None


def test_default_smoothing_stops_label_flicker():
    rng = np.random.default_rng(0)
    smoother = ProbabilitySmoother()  # the default
    raw_labels, smooth_labels = [], []
    for k in range(150):  # 5 s at 30 fps of a face holding one expression, noisy network output
        probs = np.array([0.45, 0.40, 0.15]) + rng.normal(0, 0.08, 3)
        probs = np.clip(probs, 0.01, None) / np.clip(probs, 0.01, None).sum()
        raw_labels.append(int(probs.argmax()))
        smooth_labels.append(int(smoother.update(1, k / 30, probs).argmax()))
    flips = lambda labels: sum(a != b for a, b in zip(labels, labels[1:]))  # noqa: E731
    assert flips(raw_labels) > 20
    assert flips(smooth_labels) <= 2
    assert np.bincount(smooth_labels[15:]).argmax() == 0  # and it settles on the true top class


def test_tracks_are_smoothed_separately():
    smoother = ProbabilitySmoother(0.5)
    smoother.update(1, 0.0, np.array([1.0, 0.0]))
    out = smoother.update(2, 0.04, np.array([0.0, 1.0]))
    assert out.tolist() == [0.0, 1.0]  # a new track starts from what it shows, not from track 1


# ---------------------------------------------------------------------------------------- summary
def _frame(index, time_s, faces):
    from face_emotion.inference.results import Box, FacePrediction, ImageResult
    from face_emotion.video import FrameResult

    classes = ("a", "b")
    predictions = tuple(FacePrediction(Box(0, 0, 10, 10), 0.9, classes[int(p > 0.5)], max(p, 1 - p),
                                       {"a": 1 - p, "b": p}) for _, p in faces)
    return FrameResult(index, time_s, ImageResult(predictions, 64, 64), tuple(t for t, _ in faces), True)


def test_summary_per_track_and_for_the_clip():
    frames = [_frame(0, 0.0, [(None, 0.9)]), _frame(1, 0.5, [(1, 0.9), (2, 0.2)]),
              _frame(2, 1.0, [(1, 0.8)]), _frame(3, 1.5, [(1, 0.3)]), _frame(4, 2.0, [(1, 0.7)])]
    summary = summarise(frames, ("a", "b"), path="x.mp4").to_dict()
    one, two = summary["tracks"]
    assert (one["track_id"], one["first_s"], one["last_s"], one["frames"]) == (1, 0.5, 2.0, 4)
    assert one["dominant_emotion"] == "b" and one["share"] == {"a": 0.25, "b": 0.75}
    assert one["mean_probabilities"]["b"] == pytest.approx((0.9 + 0.8 + 0.3 + 0.7) / 4)
    assert two["dominant_emotion"] == "a" and two["frames"] == 1
    assert summary["dominant_emotion"] == "b"  # 3 of the 5 numbered face-frames
    assert summary["frames_analysed"] == 5 and summary["duration_s"] == 2.0


def test_no_detect_reads_a_frame_as_it_reads_an_image(clips, tiny_model_dir):
    """--no-detect on a clip takes each (non-square) frame as it is, as images and the page do."""
    from face_emotion.inference.pipeline import analyse
    from face_emotion.inference.predictor import Predictor

    whole = Predictor.load(tiny_model_dir, detector="none", num_threads=1)
    frames = list(analyse_video(whole, clips["moving"], VideoOptions(smooth_s=0)))
    with VideoSource(clips["moving"]) as video:
        rgb = [f.rgb for f, _ in zip(video.frames(), range(3))]
    for frame, pixels in zip(frames, rgb):
        image = analyse(whole, pixels, detect=False)
        assert frame.image.faces[0].box == image.faces[0].box
        got, want = frame.image.faces[0].probabilities, image.faces[0].probabilities
        assert got == pytest.approx(want, abs=1e-6)


def test_every_way_into_a_clip_runs_the_one_loop(clips, predictor, tiny_model_dir, monkeypatch):
    """analyse_video, analyse_clip (API, server) and `predict` (CLI) iterate ClipRun, and nothing else."""
    from face_emotion.video import analyse as loop

    runs = []
    original = loop.ClipRun.__iter__

    def counted(self):
        runs.append(self.path)
        return original(self)

    monkeypatch.setattr(loop.ClipRun, "__iter__", counted)
    options = VideoOptions(sample_fps=5)
    list(analyse_video(predictor, clips["moving"], options))
    analysis = loop.analyse_clip(predictor, clips["moving"], options)
    result = CliRunner().invoke(main, ["predict", str(clips["moving"]), "--json", "--sample-fps", "5",
                                       "--threads", "1", "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert runs == [str(clips["moving"])] * 3
    cli = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["frame"] for f in cli] == [f.frame for f in analysis.frames]
    assert analysis.summary.frames_analysed == len(cli) == 10


# -------------------------------------------------------------------------------------------- CLI
@needs_detector
def test_predict_a_clip_with_every_output(clips, tiny_model_dir, tmp_path):
    out = tmp_path / "annotated"
    summary_file, timeline = tmp_path / "s.json", tmp_path / "t.png"
    result = CliRunner().invoke(main, [
        "predict", str(clips["crossing"]), "--model", str(tiny_model_dir), "--json", "--summary", str(summary_file),
        "--annotate", str(out), "--timeline", str(timeline), "--threads", "1"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 75 and [line["frame"] for line in lines] == list(range(75))
    face = lines[10]["faces"][0]
    assert set(face) == {"track_id", "box", "score", "emotion", "confidence", "probabilities"}
    assert lines[10]["error"] is None and lines[10]["time_s"] == pytest.approx(0.4)
    # A frame line is an image line (predict --json on a photo) plus frame, time_s and track ids.
    assert lines[10]["model"] == "tiny-test-model" and lines[10]["elapsed_ms"] > 0
    assert list(lines[10]) == ["path", "frame", "time_s", "emotion", "confidence", "faces", "image", "error",
                               "model", "elapsed_ms"]
    summary = json.loads(summary_file.read_text())["clips"][0]
    assert [t["track_id"] for t in summary["tracks"]] == [1, 2]
    assert summary["tracks"][0]["frames"] >= 70
    assert abs(sum(summary["tracks"][0]["share"].values()) - 1) < 1e-3
    # The annotated copy: H.264 in MP4, every frame, and boxes drawn on it.
    with av.open(str(out / "crossing.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 75
    with VideoSource(clips["crossing"]) as original:
        first = next(original.frames()).rgb
    assert np.abs(decoded[5].astype(int) - first.astype(int)).max() > 100  # box colours over the grey
    assert not list(out.glob(".*partial"))
    with Image.open(timeline) as png:
        assert png.format == "PNG" and png.height > 300


@needs_detector
def test_predict_csv_mixes_images_and_clips(clips, tiny_model_dir, tmp_path):
    image = tmp_path / "face.png"
    astronaut_face().save(image)
    table = tmp_path / "rows.csv"
    result = CliRunner().invoke(main, ["predict", str(image), str(clips["moving"]), "--model", str(tiny_model_dir),
                                       "--csv", str(table), "--sample-fps", "5", "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(table.open()))
    assert rows[0]["path"] == str(image) and rows[0]["frame"] == "" and rows[0]["status"] == "ok"
    clip_rows = [r for r in rows if r["path"] == str(clips["moving"])]
    assert [int(r["frame"]) for r in clip_rows] == list(range(0, 50, 5))
    assert {r["track_id"] for r in clip_rows} == {"1"}  # numbered from the first frame
    assert float(clip_rows[2]["time_s"]) == pytest.approx(0.4)
    # Faces in photos and face-frames of clips are counted apart.
    assert result.stderr.strip().startswith("1 image, 1 video, 1 face, 10 face-frames, 0 errors")


@needs_detector
def test_predict_reports_each_bad_clip_and_goes_on(clips, tiny_model_dir, tmp_path):
    bad = {
        "empty.mp4": b"",
        "truncated.mp4": clips["moving"].read_bytes()[:4000],
        "audio.mp4": clips["audio"].read_bytes(),
    }
    buffer = io.BytesIO()
    astronaut_face().save(buffer, format="PNG")
    bad["photo.mp4"] = buffer.getvalue()
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "annotated"
    args = ["predict", *[str(tmp_path / n) for n in bad], str(clips["blank"]), "--model", str(tiny_model_dir),
            "--json", "--annotate", str(out), "--summary", str(tmp_path / "s.json"), "--threads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output  # the blank clip was read
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    errors = {line["path"]: line["error"] for line in lines if line["error"]}
    assert set(errors) == {str(tmp_path / n) for n in bad}
    assert errors[str(tmp_path / "audio.mp4")]["code"] == "no_video_stream"
    assert "PNG image" in errors[str(tmp_path / "photo.mp4")]["message"]
    # Nothing left behind for the bad clips; the faceless clip still gets its annotated copy.
    assert sorted(p.name for p in out.iterdir()) == ["blank.mp4"]
    summary = json.loads((tmp_path / "s.json").read_text())["clips"]
    assert [c.get("error", {}).get("code") for c in summary] == ["invalid_video"] * 2 + ["no_video_stream",
                                                                                        "invalid_video", None]
    assert summary[-1]["tracks"] == [] and summary[-1]["dominant_emotion"] is None
    # Every clip bad: exit status 1.
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "empty.mp4"), "--model", str(tiny_model_dir)])
    assert result.exit_code == 1 and "empty" in result.output


@needs_detector
def test_predict_text_output_summarises_each_clip(clips, tiny_model_dir):
    result = CliRunner().invoke(main, ["predict", str(clips["crossing"]), "--model", str(tiny_model_dir),
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "75 frames analysed" in lines[0] and "2 face tracks" in lines[0]
    assert lines[1].strip().startswith("face 1 from") and lines[2].strip().startswith("face 2 from")
