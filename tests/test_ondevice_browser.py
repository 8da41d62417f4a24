""""On this device" (issue 18): the page runs CenterFace and the served model in Chromium with
ONNX Runtime Web, sends no photo or frame anywhere, and answers as the server does.

Against a real `face-emotion serve` of the bundled model (the model users get), so the agreement
figures are those of the real model. Slow: the first start derives the model's ONNX form.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from support.browser import BROWSER, launch, screenshot
from support.clips import default_detector_available, fake_camera_clip, moving_face_clip
from support.photos import face_photos
from support.server import ServerProcess, free_port, serve_command

pytestmark = [*BROWSER, pytest.mark.slow]
expect = pytest.importorskip("playwright.sync_api").expect
if not default_detector_available():
    pytestmark.append(pytest.mark.skip(reason="the CenterFace model file is missing"))

RUNTIME = Path(__file__).resolve().parents[1] / "src/face_emotion/server/static/vendor/onnxruntime-web"
PREDICT_PATHS = ("/predict",)  # /predict, /predict/batch, /predict/video


@pytest.fixture(scope="module", autouse=True)
def _runtime_installed():
    # Not a skip: without the runtime the feature is broken, and `make setup` installs it.
    assert (RUNTIME / "ort.wasm.min.js").is_file(), f"onnxruntime-web is missing in {RUNTIME}: run `make setup`"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The bundled model served as `make run` serves it (one worker here, to spare the CPUs)."""
    port = free_port()
    command = serve_command(port, "--workers", "1", "--threads", "4", "--inference-threads", "1")
    process = ServerProcess(command, port, tmp_path_factory.mktemp("ondevice") / "serve.log")
    with process.start(timeout_s=600):
        yield process


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> Path:
    return fake_camera_clip(tmp_path_factory.mktemp("camera") / "face.y4m")


@pytest.fixture(scope="module")
def camera_browser(playwright, camera_clip):
    """Chromium whose fake camera shows a face (the session's `browser` shows a test pattern)."""
    browser = launch(playwright, f"--use-file-for-fake-video-capture={camera_clip}")
    yield browser
    browser.close()


class Recorder:
    """A page's requests and problems (script errors, CSP violations, other origins)."""

    def __init__(self, page, origin: str):
        self.requests: list[tuple[str, str]] = []
        self.problems: list[str] = []
        page.on("request", lambda r: self.requests.append((r.method, r.url)))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        self.origin = origin

    def predict_calls(self) -> list[str]:
        return [url for _, url in self.requests if url.startswith(self.origin) and
                url[len(self.origin):].split("?")[0].startswith(PREDICT_PATHS)]

    def outside(self) -> list[str]:
        return [url for _, url in self.requests if not url.startswith((self.origin, "blob:", "data:"))]


@contextlib.contextmanager
def _open_local(browser, server, query: str = ""):
    """The page in on-device mode, its models running; its problems checked when it closes."""
    context = browser.new_context(viewport={"width": 1100, "height": 850})
    page = context.new_page()
    recorder = Recorder(page, server.url)
    page.goto(server.url + "/?device=local" + query)
    expect(page.locator("#device-status")).to_contain_text("Running in this browser", timeout=240_000)
    yield page, recorder
    context.close()
    assert not recorder.problems, recorder.problems
    assert not recorder.outside(), f"loaded from other origins: {recorder.outside()}"


@pytest.fixture
def local_page(camera_browser, server):
    with _open_local(camera_browser, server) as opened:
        yield opened


def _get(url: str, headers: dict | None = None) -> tuple[bytes, dict]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=120) as response:
        return response.read(), dict(response.headers)


def test_model_files_are_the_bytes_the_server_runs_named_by_their_hash(server):
    from face_emotion.faces.centerface_detector import default_model_path, runnable_model
    from face_emotion.inference.compact_onnx import compact_onnx
    from face_emotion.models.files import BUNDLED_MODEL_DIR
    from face_emotion.server.model_files import RUNTIME_DIR

    body, headers = _get(server.url + "/model-files/manifest.json")
    manifest = json.loads(body)
    assert headers["Cache-Control"] == "no-cache"
    assert manifest["model"]["spec"]["preprocess"]["image_size"] == 80  # the bundled model's own spec
    exact, headers = _get(server.url + "/model-files/" + manifest["model"]["exact"]["file"])
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    digest = hashlib.sha256(exact).hexdigest()
    entry = manifest["model"]["exact"]
    assert digest == entry["sha256"] and entry["file"].startswith(digest[:16] + "/")
    # The file the server's own ONNX Runtime session runs: the ONNX form shipped beside the bundled
    # weights, or one derived into the cache.
    served = [BUNDLED_MODEL_DIR / "model.onnx", *(Path(os.environ["FACE_EMOTION_CACHE"]) / "onnx").glob("*.onnx")]
    assert digest in {hashlib.sha256(p.read_bytes()).hexdigest() for p in served if p.is_file()}
    detector, _ = _get(server.url + "/model-files/" + manifest["detector"]["exact"]["file"])
    assert detector == runnable_model(default_model_path().read_bytes())
    # What the page loads by default, gzipped: under a third of the 21 MB of the exact pair.
    light = 0
    for entry in (manifest["model"], manifest["detector"]):
        data, headers = _get(server.url + "/model-files/" + entry["file"], {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in headers["Vary"]
        assert hashlib.sha256(gzip.decompress(data)).hexdigest() == entry["sha256"]
        light += len(data)
    assert gzip.decompress(_get(server.url + "/model-files/" + manifest["detector"]["file"],
                                {"Accept-Encoding": "gzip"})[0]) == compact_onnx(detector)
    assert light < 0.4 * (len(exact) + len(detector)), light
    wasm, headers = _get(server.url + manifest["runtime"] + "ort-wasm-simd-threaded.wasm", {"Accept-Encoding": "gzip"})
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable" and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(wasm) == (RUNTIME_DIR / "ort-wasm-simd-threaded.wasm").read_bytes()
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(server.url + "/model-files/0000000000000000/model.onnx")
    assert missing.value.code == 404
    _, headers = _get(server.url + "/")
    assert "'wasm-unsafe-eval'" in headers["Content-Security-Policy"]
    assert "unsafe-eval'" not in headers["Content-Security-Policy"].replace("'wasm-unsafe-eval'", "")
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"


def _match(server_faces, local_faces):
    """Pairs of (server face, browser face) by box overlap, and the faces left unpaired."""
    def iou(a, b):
        a, b = a["box"], b["box"]
        w = max(0, min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"]))
        h = max(0, min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"]))
        union = a["width"] * a["height"] + b["width"] * b["height"] - w * h
        return w * h / union if union else 0.0

    pairs, left = [], list(local_faces)
    for face in server_faces:
        best = max(left, key=lambda other: iou(face, other), default=None)
        if best is not None and iou(face, best) > 0.5:
            pairs.append((face, best))
            left.remove(best)
    return pairs, len(server_faces) - len(pairs) + len(left)


def test_on_this_device_answers_as_the_server_does_on_real_photos(camera_browser, server, tmp_path):
    """With the exact files (?weights=exact) the browser computes what the server computes; with
    the light ones (the default: weights stored as int8/fp16, server/model_files.py) it may differ
    as much as the fp16 detector's one-pixel box shifts move a crop (up to 0.038 on 103 real faces,
    benchmarks/light_models.py): probabilities by up to 0.04, a label only where the server's top
    two are that close."""
    photos = face_photos(tmp_path / "photos")
    python = {}
    for path in photos:
        kind = "image/png" if path.suffix == ".png" else "image/jpeg"
        request = urllib.request.Request(server.url + "/predict", data=path.read_bytes(),
                                         headers={"Content-Type": kind})
        with urllib.request.urlopen(request, timeout=300) as response:
            python[path] = json.loads(response.read())
    # weights, least top-1 agreement, largest probability difference, largest box difference (px)
    for weights, agreement, max_prob, max_box in (("exact", 0.98, 0.02, 2), ("light", 0.96, 0.04, 2)):
        with _open_local(camera_browser, server, "&weights=exact" if weights == "exact" else "") as (page, recorder):
            pairs, unpaired = [], 0
            for path in photos:
                page.set_input_files("#file-input", str(path))
                browser_answer = page.evaluate(
                    "async () => await FaceLocal.analyseFile(document.getElementById('file-input').files[0])")
                assert browser_answer["image"] == python[path]["image"], path.name
                matched, missing = _match(python[path]["faces"], browser_answer["faces"])
                pairs += [(path.name, a, b) for a, b in matched]
                unpaired += missing
            # The page itself asked the server nothing: only the test's own urllib calls went to /predict.
            assert recorder.predict_calls() == []
        faces = len(pairs) + unpaired
        agree = sum(a["emotion"] == b["emotion"] for _, a, b in pairs)
        prob_diff = max(abs(a["probabilities"][k] - b["probabilities"][k]) for _, a, b in pairs
                        for k in a["probabilities"])
        box_diff = max(abs(a["box"][k] - b["box"][k]) for _, a, b in pairs for k in a["box"])
        # A label may differ only where the server's top two are within what the probabilities may move.
        ties = [sorted(a["probabilities"].values())[-2:] for _, a, b in pairs if a["emotion"] != b["emotion"]]
        report = (f"on-device ({weights} files) vs server: {len(photos)} photos, {faces} faces, top-1 agreement "
                  f"{agree}/{faces} ({agree / faces:.1%}), max probability difference {prob_diff:.2e}, "
                  f"max box difference {box_diff} px, disagreements at top-two probabilities {ties}")
        print(report)
        assert faces >= 20, report  # enough faces for the percentage to mean something
        assert agree / faces >= agreement, report  # a face found on one side only counts as a disagreement
        assert all(top - second <= 2 * max_prob for second, top in ties), report
        assert prob_diff <= max_prob, report
        assert box_diff <= max_box, report


def _webcam_frames(tmp_path) -> list[tuple[str, Image.Image, Image.Image]]:
    """(name, last frame, this frame) pairs the size the page analyses webcam frames at (320 px
    wide): the fake camera's head moving by up to a third of its width, two heads, real photos.
    Faces are at least the detector's min_face (40 px) wide, as a webcam's are: below it CenterFace
    is not set to find faces reliably, and its boxes wander by a few pixels between any two runs."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    head = astronaut.crop((130, 0, 330, 240)).resize((80, 96))  # as in fake_camera_clip, at half size
    other = ImageEnhance.Brightness(head.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((60, 72))).enhance(0.7)
    background = Image.fromarray(np.random.default_rng(0).uniform(60, 200, (6, 8, 3)).astype(np.uint8)).resize(
        (320, 240), Image.Resampling.BICUBIC)

    def frame(*placed):
        canvas = background.copy()
        for piece, x, y in placed:
            canvas.paste(piece, (x, y))
        return canvas

    photos = {p.name: Image.open(p).convert("RGB") for p in face_photos(tmp_path / "photos")}
    pairs = [("still head", frame((head, 120, 72)), frame((head, 120, 72))),
             ("head moved 12 px", frame((head, 100, 72)), frame((head, 112, 70))),
             ("head moved 26 px", frame((head, 100, 72)), frame((head, 126, 76))),
             ("two heads", frame((head, 30, 60), (other, 210, 100)), frame((head, 38, 62), (other, 204, 98)))]
    # Real photos, shrunk so that the face is about webcam size (50-70 px wide), moved 6 px.
    for name, side, x, y in (("astronaut.png", 240, 40, -20), ("astronaut-roll-12.png", 240, 40, -20),
                             ("cameraman.png", 360, -40, 0)):
        photo = photos[name].resize((side, side), Image.Resampling.BILINEAR)
        pairs.append((name, frame((photo, x, y)), frame((photo, x + 6, y + 4))))
    return pairs


def test_live_frames_searched_around_the_last_faces_find_what_the_whole_frame_finds(local_page, tmp_path):
    """Webcam frames on this device look for faces in windows around where they were in the last
    frame (FaceFollower). That must find the same faces as searching the whole frame (boxes and
    landmarks within 2 px) and give the same labels, or the live view drifts from the photo path."""
    page, recorder = local_page
    pairs = _webcam_frames(tmp_path)
    payload = [[name, *[{"width": im.width, "height": im.height, "rgb": base64.b64encode(im.tobytes()).decode()}
                        for im in (last, this)]] for name, last, this in pairs]
    compared = page.evaluate("""async (pairs) => {
        const { pipeline } = await FaceLocal.load();
        const image = (f) => ({ width: f.width, height: f.height,
                                data: Uint8Array.from(atob(f.rgb), (c) => c.charCodeAt(0)) });
        const plain = (faces) => faces.map((f) => ({ box: f.box, landmarks: f.landmarks }));
        const out = [];
        for (const [name, last, now] of pairs) {
            const before = image(last), frame = image(now);
            const follower = FaceLocal.newFollower();
            await follower.detect(pipeline, before, {});  // the last frame: searched whole
            const times = {};
            const windows = plain(await follower.detect(pipeline, frame, times));
            const whole = plain(await pipeline.detect(frame, {}));
            const labelled = FaceLocal.newFollower();
            await labelled.detect(pipeline, before, {});
            const viaWindows = await pipeline.analyse(frame, labelled);
            const viaWhole = await pipeline.analyse(frame);
            out.push({ name, windows, whole, searchedInWindows: follower.windows === 1 && labelled.windows === 1,
                       ranTheDetector: typeof times.detector_roi === "number" && times.detector === undefined,
                       labels: [viaWindows.faces.map((f) => f.emotion), viaWhole.faces.map((f) => f.emotion)] });
        }
        return out;
    }""", payload)
    differences = {}  # frame: (largest box difference, largest landmark difference), in pixels
    for row in compared:
        name = row["name"]
        assert row["searchedInWindows"] and row["ranTheDetector"], f"{name}: not searched in windows"
        assert row["whole"], f"{name}: no face in the whole frame"
        assert len(row["windows"]) == len(row["whole"]), (name, row)
        box, point = 0.0, 0.0
        for got, want in zip(row["windows"], row["whole"]):
            box = max(box, *(abs(a - b) for a, b in zip(got["box"], want["box"])))
            point = max(point, *(abs(a - b) for name_ in want["landmarks"]
                                 for a, b in zip(got["landmarks"][name_], want["landmarks"][name_])))
        differences[name] = (box, round(point, 2))
        assert row["labels"][0] == row["labels"][1], (name, row["labels"])
    report = (f"windows vs whole frame: {len(compared)} frames, {sum(len(r['whole']) for r in compared)} faces, "
              f"largest box and landmark differences (px): {differences}")
    print(report)
    assert all(box <= 2 and point <= 2 for box, point in differences.values()), report
    assert recorder.predict_calls() == []


def test_photo_mode_on_this_device_labels_faces_and_sends_nothing(local_page, tmp_path):
    page, recorder = local_page
    photo = face_photos(tmp_path / "photos")[0]
    page.set_input_files("#file-input", str(photo))
    page.click("#predict-button")
    expect(page.locator(".face-box")).to_have_count(1, timeout=120_000)
    expect(page.locator("#status")).to_contain_text("1 face found")
    uploads = [(m, u) for m, u in recorder.requests if m != "GET"]
    assert uploads == [] and recorder.predict_calls() == []


def test_webcam_on_this_device_labels_the_face_without_calling_predict(local_page):
    page, recorder = local_page
    page.click("#mode-webcam")
    page.click("#camera-start")
    label = page.locator("#camera-label")
    expect(label).to_have_text(re.compile(r"^1 face: \w+ \(\d+%\)\.$"), timeout=120_000)
    expect(page.locator("#camera-rate")).to_contain_text("frames/s", timeout=120_000)
    boxes = json.loads(page.locator("#video-overlay").get_attribute("data-boxes"))
    assert len(boxes) == 1
    page.wait_for_timeout(2000)
    assert recorder.predict_calls() == [], recorder.predict_calls()
    assert [(m, u) for m, u in recorder.requests if m != "GET"] == []
    screenshot(page, "webcam-on-device.png")
    page.click("#camera-stop")


def test_video_mode_on_this_device_tracks_the_face_without_uploading(local_page, tmp_path):
    page, recorder = local_page
    # 2 s: at 5 analysed frames a second the face moves a third of its width between them. (The
    # browser matches boxes by overlap at the sampled rate; the server also follows faces
    # between samples by optical flow, so it keeps faster faces together.)
    clip, _ = moving_face_clip(tmp_path / "moving.mp4", count=50)
    page.click("#mode-video")
    page.set_input_files("#clip-input", str(clip))
    page.click("#clip-button")
    expect(page.locator("#clip-status")).to_contain_text("1 face tracked", timeout=240_000)
    expect(page.locator("#track-table tbody tr")).to_have_count(1)
    assert recorder.predict_calls() == [] and [(m, u) for m, u in recorder.requests if m != "GET"] == []
    # The saved analysis reads like the server's: the clip's header in the summary, frame numbers in the CSV.
    with page.expect_download() as saved:
        page.click("#clip-download-json")
    analysis = json.loads(Path(saved.value.path()).read_text())
    video = analysis["summary"]["video"]
    assert (video["fps"], video["frames"], video["container"], video["codec"]) == (25.0, 50, "mov", "h264")
    with page.expect_download() as saved:
        page.click("#clip-download-csv")
    rows = list(csv.DictReader(io.StringIO(Path(saved.value.path()).read_text())))
    assert [int(row["frame"]) for row in rows] == list(range(0, 50, 5))


def test_export_web_runs_from_a_plain_static_file_server(server, tmp_path, browser):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "face_emotion", "export", "--format", "web", "--output", str(site)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert (site / "index.html").is_file() and (site / "model-files" / "manifest.json").is_file()
    port = free_port()
    static = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=site,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        origin = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(origin + "/")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        context = browser.new_context()
        page = context.new_page()
        recorder = Recorder(page, origin)
        page.goto(origin + "/")
        expect(page.locator("#device-status")).to_contain_text("Running in this browser", timeout=240_000)
        expect(page.locator("#device-local")).to_be_checked()
        page.set_input_files("#file-input", str(face_photos(tmp_path / "photos")[0]))
        page.click("#predict-button")
        expect(page.locator(".face-box")).to_have_count(1, timeout=120_000)
        expect(page.locator("#status")).to_contain_text("1 face found")
        context.close()
        assert not recorder.problems, recorder.problems
        assert not recorder.outside()
        assert recorder.predict_calls() == []
    finally:
        static.terminate()
        static.wait(timeout=10)
