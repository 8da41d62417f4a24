"""On this device the browser builds each answer itself: a photo's with static/ondevice.js
(resultJson, the mirror of ImageResult.to_dict), a clip's with static/tracking.js (frameJson,
summarise, clipAnswer, clipInfo: the mirrors of video/results.py, video/summary.py and
video/decode.py). Both sides run here on the same frames and must give the same JSON, so a change
on either side fails in seconds, in Node, before any browser test. The page's video defaults
come from the server (ServerConfig.page_video_settings), never from copies in its scripts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from face_emotion.inference.results import Box, FacePrediction, ImageResult
from face_emotion.server.config import ServerConfig
from face_emotion.video.analyse import ClipAnalysis
from face_emotion.video.results import FrameResult
from face_emotion.video.summary import SummaryBuilder

STATIC = Path(__file__).resolve().parents[1] / "src/face_emotion/server/static"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
CLASSES = ("anger", "happiness", "neutral", "sadness")

HARNESS = r"""
const T = require(process.argv[1]);
const fs = require("fs");
const job = JSON.parse(fs.readFileSync(0, "utf8"));
const out = {};
if (job.frames) out.answer = T.clipAnswer(job.frames, job.classes, job.info, job.options);
if (job.clips) out.infos = job.clips.map((path) => T.clipInfo(new Uint8Array(fs.readFileSync(path)), 0, 0));
if (job.settings) {
  globalThis.document = { getElementById: () => ({ dataset: { video: job.settings } }) };
  const settings = T.pageSettings();
  const tracker = new T.Tracker(settings);
  out.settings = settings;
  out.tracker = { smoothS: tracker.smoothS, lostS: tracker.lostS, forgetS: tracker.forgetS };
}
process.stdout.write(JSON.stringify(out));
"""


def _node(job: dict) -> dict:
    done = subprocess.run([NODE, "-e", HARNESS, str(STATIC / "tracking.js")], input=json.dumps(job),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _frames(count: int = 40, seed: int = 0) -> list[dict]:
    """Frames as the browser's clip loop has them: two tracks (one first seen without a number),
    smoothed probabilities unrounded, a frame without faces, ties in the label counts."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        faces = []
        if i % 9 != 4:
            for track, x in ((1, 10 + 3 * i), (None if i == 0 else 2, 300 - 2 * i)):
                if track == 2 and i < 3:
                    continue
                probs = rng.dirichlet(np.ones(len(CLASSES)) * 0.7)
                faces.append({"track_id": track, "box": {"x": x, "y": 40, "width": 90, "height": 110},
                              "score": float(rng.uniform(0.5, 1)),
                              "probabilities": dict(zip(CLASSES, map(float, probs)))})
        frames.append({"frame": 5 * i, "time_s": i / 5 + 1e-5 * (i % 3), "faces": faces})
    return frames


@needs_node
def test_the_browser_builds_the_photo_answer_python_builds():
    rng = np.random.default_rng(1)
    faces = [{"box": [int(x), 30, 80 - 20 * i, 90 - 20 * i], "score": float(rng.uniform(0.5, 1))}
             for i, x in enumerate((10, 200, 330))]
    probs = [list(map(float, rng.dirichlet(np.ones(len(CLASSES))))) for _ in faces]
    job = {"faces": faces, "probs": probs, "classes": CLASSES}
    script = r"""
const F = require(process.argv[1]);
const job = JSON.parse(require("fs").readFileSync(0, "utf8"));
const answers = [job.faces, []].map((faces) => F.steps.resultJson(faces, job.probs, job.classes, 640, 480, "m", 12.34));
process.stdout.write(JSON.stringify(answers));
"""
    done = subprocess.run([NODE, "-e", script, str(STATIC / "ondevice.js")], input=json.dumps(job),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    for face_list, answer in zip((faces, []), theirs):
        predictions = [FacePrediction.of(Box(*f["box"]), f["score"], p, CLASSES) for f, p in zip(face_list, probs)]
        ours = ImageResult.of((640, 480), predictions, model="m", elapsed_ms=12.34).to_dict()
        assert answer == ours
        assert list(answer) == list(ours)


def _python_answer(frames: list[dict], info: dict, options: dict) -> dict:
    results = []
    for frame in frames:
        faces = [FacePrediction.of(Box(**f["box"]), f["score"], [f["probabilities"][c] for c in CLASSES], CLASSES)
                 for f in frame["faces"]]
        image = ImageResult.of((info["width"], info["height"]), faces, model=options["model"], elapsed_ms=3.0)
        results.append(FrameResult(frame["frame"], frame["time_s"], image,
                                   tuple(f["track_id"] for f in frame["faces"]), True))
    builder = SummaryBuilder(CLASSES, None, info)
    for result in results:
        builder.add(result)
    analysis = ClipAnalysis(results, builder.summary(), CLASSES, options["model"])
    return analysis.to_dict(sample_fps=options["sample_fps"], smooth_s=options["smooth_s"],
                            elapsed_ms=options["elapsed_ms"])


@needs_node
def test_the_browser_builds_the_clip_answer_python_builds():
    info = {"width": 480, "height": 270, "fps": 25.0, "duration_s": 8.0, "frames": 200, "container": "mov",
            "codec": "h264"}
    options = {"sample_fps": 5, "smooth_s": 0.5, "model": "m", "elapsed_ms": 1234.56}
    for seed in range(3):
        frames = _frames(seed=seed)
        ours = _python_answer(frames, info, options)
        theirs = _node({"frames": frames, "classes": CLASSES, "info": info, "options": options})["answer"]
        assert theirs == ours
    assert ours["summary"]["tracks"] and ours["frames"][4]["faces"] == []


@needs_node
def test_the_browser_reads_what_the_server_reads_from_a_clip_header(tmp_path):
    """fps, frames, duration, container and codec of MP4s (what the on-device JSON summary lacked);
    the container of the other families."""
    pytest.importorskip("av")
    from face_emotion.video import VideoSource
    from support.clips import blank_clip, moving_face_clip, write_clip

    clips = [moving_face_clip(tmp_path / "a.mp4", count=30, fps=25)[0],
             blank_clip(tmp_path / "b.mp4", count=12, fps=30),
             write_clip(tmp_path / "c.webm", [np.full((64, 64, 3), 99, np.uint8)] * 3, codec="libvpx-vp9")]
    infos = _node({"clips": [str(c) for c in clips]})["infos"]
    for clip, info in zip(clips, infos):
        with VideoSource(clip) as video:
            server = video.info.to_dict()
        if server["container"] == "mov":
            assert {**info, "width": server["width"], "height": server["height"]} == server
        else:
            assert info["container"] == server["container"] == "matroska"


def test_the_page_gets_the_servers_video_defaults(tmp_path):
    from face_emotion.server import create_app
    from support.fakes import FakePredictor

    app = create_app({"video_sample_fps": 2.5}, predictor=FakePredictor())
    page = app.test_client().get("/").get_data(as_text=True)
    found = re.search(r"data-video='([^']*)'", page)
    settings = json.loads(found.group(1))
    assert settings == ServerConfig(video_sample_fps=2.5).page_video_settings()
    assert settings["sample_fps"] == 2.5 and settings["smooth_s"] == 0.5 and settings["lost_track_s"] == 1.0


@needs_node
def test_the_page_tracker_takes_its_settings_from_the_page():
    settings = {"sample_fps": 3, "smooth_s": 0.7, "lost_track_s": 1.5, "forget_after_s": 2.5}
    out = _node({"settings": json.dumps(settings)})
    assert out["settings"] == settings
    assert out["tracker"] == {"smoothS": 0.7, "lostS": 1.5, "forgetS": 2.5}


def test_the_page_scripts_keep_no_copy_of_a_server_default():
    """The copies that were there: smoothing, lost track, forget time, sample rate, size limits."""
    copies = [r"SMOOTH_S\s*=", r"LOST_TRACK_S\s*=", r"FORGET_AFTER_S\s*=", r"SAMPLE_FPS\s*=", r"sampleFps\s*\|\|\s*\d",
              r"\?\s*0\.5\s*:", r"maxUploadMb\s*\|\|", r"maxVideoMb\s*\|\|"]
    for script in ("tracking.js", "local.js", "video.js", "app.js"):
        text = (STATIC / script).read_text()
        assert not [c for c in copies if re.search(c, text)], script
