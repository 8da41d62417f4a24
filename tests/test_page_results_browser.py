"""The page's own handling of answers, in a real headless Chromium: stale answers, label layout in
the webcam and video views, numbered first frames, and saving results (JSON, CSV, annotated clip).

The API's answers are fixed here (page.route) where the page's code, not the model, is under test.
"""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from PIL import Image

from support.browser import BROWSER, screenshot, wait_for

pytestmark = BROWSER
expect = pytest.importorskip("playwright.sync_api").expect

PROBS = {"anger": 0.05, "happiness": 0.87, "sadness": 0.08}


def _face(x, y, w, h, probabilities=PROBS):
    top = max(probabilities, key=probabilities.get)
    return {"box": {"x": x, "y": y, "width": w, "height": h}, "score": 0.9, "emotion": top,
            "confidence": probabilities[top], "probabilities": dict(probabilities)}


def _answer(boxes, width, height):
    faces = [_face(*b) for b in boxes]
    return {"emotion": faces[0]["emotion"] if faces else None, "confidence": faces[0]["confidence"] if faces else None,
            "faces": faces, "image": {"width": width, "height": height}, "error": None,
            "model": "tiny-test-model", "elapsed_ms": 1.0}


def _overlap(a, b, slack=0.5):
    return (a["x"] + slack < b["x"] + b["w"] and b["x"] + slack < a["x"] + a["w"]
            and a["y"] + slack < b["y"] + b["h"] and b["y"] + slack < a["y"] + a["h"])


def _photo(path, colour):
    Image.new("RGB", (800, 600), colour).save(path)
    return path


def test_an_answer_for_the_previous_photo_is_dropped_and_predict_is_honoured(page, tmp_path):
    held = []
    page.route("**/predict*", lambda route: held.append(route))
    first, second = _photo(tmp_path / "first.png", (150, 140, 130)), _photo(tmp_path / "second.png", (90, 100, 110))
    page.set_input_files("#file-input", str(first))
    page.check("#heatmap-toggle")  # the slow request of the report (Grad-CAM)
    page.click("#predict-button")
    _wait_until(lambda: len(held) == 1)
    assert "explain=1" in held[0].request.url
    page.set_input_files("#file-input", str(second))  # chosen while the first answer is on its way
    page.click("#predict-button")
    _wait_until(lambda: len(held) == 2, message="the Predict click for the second photo sent no request")
    # The first photo's answer arrives late: six faces that are not on the second photo.
    try:
        held[0].fulfill(status=200, content_type="application/json",
                        body=json.dumps(_answer([(10 + 120 * i, 20, 100, 100) for i in range(6)], 800, 600)))
    except Exception:  # noqa: BLE001 - the page may have aborted it already, which is as good
        pass
    page.wait_for_timeout(300)
    expect(page.locator(".face-box")).to_have_count(0)
    held[1].fulfill(status=200, content_type="application/json",
                    body=json.dumps(_answer([(300, 200, 200, 200)], 800, 600)))
    expect(page.locator(".face-box")).to_have_count(1, timeout=10_000)
    expect(page.locator("#status")).to_contain_text("1 face found")
    expect(page.locator("#predict-button")).to_have_text("Predict")


def _wait_until(condition, timeout_s=10.0, message="timed out"):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def test_webcam_labels_of_neighbouring_faces_do_not_cover_each_other(page):
    # Two faces side by side at the top of a 320x240 frame: "N happiness 87%" is wider than a box.
    answer = _answer([(60, 60, 70, 80), (135, 62, 70, 80), (210, 58, 60, 75)], 320, 240)
    page.route("**/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                          body=json.dumps(answer)))
    page.click("#mode-webcam")
    page.click("#camera-start")
    wait_for(page, "(JSON.parse(document.getElementById('video-overlay').dataset.labels || '[]')).length === 3", 30)
    labels = json.loads(page.locator("#video-overlay").get_attribute("data-labels"))
    boxes = [dict(zip("xywh", b)) for b in json.loads(page.locator("#video-overlay").get_attribute("data-boxes"))]
    for i, label in enumerate(labels):
        assert label["text"].split()[0] == str(i + 1)
        for j, other in enumerate(labels[:i]):
            assert not _overlap(label, other), f"label {i + 1} covers label {j + 1}: {labels}"
        for j, box in enumerate(boxes):
            assert j == i or not _overlap(label, box, slack=1.5), f"label {i + 1} covers face {j + 1}"
    assert labels[0]["text"] == "1 happiness 87%"
    screenshot(page, "webcam-neighbours.png")
    page.click("#camera-stop")


def _analysis(frames, width=480, height=270):
    """A /predict/video answer with these frames ([(time_s, [face, ...]), ...])."""
    ids = sorted({f["track_id"] for _, faces in frames for f in faces if f["track_id"] is not None})
    tracks = [{"track_id": i, "first_s": frames[0][0], "last_s": frames[-1][0], "frames": len(frames),
               "dominant_emotion": "happiness", "share": {"anger": 0.0, "happiness": 1.0, "sadness": 0.0},
               "mean_probabilities": PROBS} for i in ids]
    return {
        "summary": {"video": {"width": width, "height": height}, "duration_s": 3.0, "frames_analysed": len(frames),
                    "tracks": tracks, "dominant_emotion": "happiness"},
        "frames": [{"frame": 5 * k, "time_s": t, "emotion": "happiness", "confidence": 0.87, "faces": faces}
                   for k, (t, faces) in enumerate(frames)],
        "classes": ["anger", "happiness", "sadness"], "sample_fps": 5.0, "smooth_s": 0.5,
        "model": "tiny-test-model", "elapsed_ms": 1.0,
    }


def _tracked(x, y, w, h, track_id):
    return {"track_id": track_id, **_face(x, y, w, h)}


NEIGHBOURS = _analysis([
    (0.0, [_tracked(100, 60, 90, 100, None), _tracked(195, 64, 90, 100, None)]),  # the server's first frame
    (0.2, [_tracked(102, 60, 90, 100, 1), _tracked(197, 64, 90, 100, 2)]),
    (0.4, [_tracked(104, 60, 90, 100, 1), _tracked(199, 64, 90, 100, 2)]),
])


def _open_clip(page, clip, analysis):
    page.route("**/predict/video*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                body=json.dumps(analysis)))
    page.click("#mode-video")
    page.set_input_files("#clip-input", str(clip))
    wait_for(page, "document.getElementById('clip').readyState >= 2", 20)
    page.click("#clip-button")
    expect(page.locator("#clip-status")).to_contain_text("2 faces tracked", timeout=30_000)


def _video_labels(page, t):
    page.evaluate("t => { document.getElementById('clip').currentTime = t; }", t)
    expect(page.locator("#clip-overlay")).to_have_attribute("data-time", f"{t:.3f}", timeout=10_000)
    return page.evaluate("""() => [...document.querySelectorAll('#clip-overlay .clip-box')].map(b => {
        const r = b.querySelector('.face-label').getBoundingClientRect(), q = b.getBoundingClientRect();
        return {text: b.textContent, colour: getComputedStyle(b).borderTopColor,
                label: {x: r.x, y: r.y, w: r.width, h: r.height},
                box: {x: q.x, y: q.y, w: q.width, h: q.height}}; })""")


def test_video_first_frame_boxes_are_numbered_and_labels_stay_apart(page, annotated_clip):
    _open_clip(page, annotated_clip, NEIGHBOURS)
    for t in (0.0, 0.2):
        shown = _video_labels(page, t)
        assert [s["text"].split()[0] for s in shown] == ["1", "2"], (t, shown)
        assert all(s["colour"] != "rgb(200, 200, 200)" for s in shown), "a grey, unnumbered box"
        assert not _overlap(shown[0]["label"], shown[1]["label"]), shown
        assert not _overlap(shown[1]["label"], shown[0]["box"], slack=1.5), shown
        assert not _overlap(shown[0]["label"], shown[1]["box"], slack=1.5), shown
    screenshot(page, "video-neighbours.png")


def _download(page, selector):
    with page.expect_download(timeout=60_000) as info:
        page.click(selector)
    download = info.value
    return download.suggested_filename, open(download.path(), "rb").read()


def test_a_photo_result_downloads_as_json_and_csv(page, tmp_path):
    answer = _answer([(300, 200, 200, 200), (40, 40, 90, 90)], 800, 600)
    page.route("**/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                          body=json.dumps(answer)))
    page.set_input_files("#file-input", str(_photo(tmp_path / "group, outdoors.png", (150, 140, 130))))
    expect(page.locator("#downloads")).to_be_hidden()
    page.click("#predict-button")
    expect(page.locator(".face-box")).to_have_count(2, timeout=10_000)
    name, data = _download(page, "#download-json")
    assert name == "group, outdoors-emotions.json"
    saved = json.loads(data)
    assert saved["faces"] == answer["faces"] and saved["path"] == "group, outdoors.png"
    name, data = _download(page, "#download-csv")
    assert name == "group, outdoors-emotions.csv"
    rows = list(csv.reader(io.StringIO(data.decode())))
    # The columns `face-emotion predict --csv` writes for this model's classes.
    from face_emotion.inference.results import csv_header

    assert rows[0] == csv_header(("anger", "happiness", "sadness"))
    assert [r[:6] for r in rows[1:]] == [["group, outdoors.png", "1", "300", "200", "200", "200"],
                                         ["group, outdoors.png", "2", "40", "40", "90", "90"]]
    assert rows[1][7:12] == ["happiness", "0.87", "0.05", "0.87", "0.08"] and rows[1][-2:] == ["ok", ""]


def test_a_clip_analysis_downloads_as_json_and_csv(page, annotated_clip):
    _open_clip(page, annotated_clip, NEIGHBOURS)
    name, data = _download(page, "#clip-download-json")
    assert name == "crossing-emotions.json"
    assert json.loads(data)["frames"][1]["faces"][0]["track_id"] == 1
    name, data = _download(page, "#clip-download-csv")
    rows = list(csv.reader(io.StringIO(data.decode())))
    from face_emotion.video.results import csv_header

    assert rows[0] == csv_header(("anger", "happiness", "sadness"))
    assert len(rows) == 1 + 6
    assert rows[3][:5] == ["crossing.mp4", "5", "0.2", "1", "1"]  # path, frame, time_s, track_id, face


@pytest.mark.slow
def test_a_clip_downloads_with_its_boxes_burnt_in(page, annotated_clip, tmp_path):
    av = pytest.importorskip("av")

    frames = [(round(0.2 * k, 1), [_tracked(100 + 4 * k, 60, 90, 100, 1), _tracked(250, 120, 90, 100, 2)])
              for k in range(16)]
    _open_clip(page, annotated_clip, _analysis(frames))
    name, data = _download(page, "#clip-download-video")
    assert name == "crossing-annotated.webm"
    path = tmp_path / name
    path.write_bytes(data)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # Recorded in real time: a busy machine drops frames, but a 3 s clip keeps several.
    assert len(decoded) >= 5, len(decoded)
    assert decoded[-1].shape[:2] == (270, 480)

    def blue_edge(frame):  # track 2's box (#3ec1ff) where the analysis put it: its left edge at x 250
        window = frame[118:222, 244:258].astype(int)
        blue = (window[..., 2] > 170) & (window[..., 2] - window[..., 0] > 80)
        return int(blue.sum())

    # The line is 3 px x 100 px; lossy VP8 and 4:2:0 chroma smear its colour, so count a third of it.
    boxed = [blue_edge(frame) >= 100 for frame in decoded[1:]]
    assert sum(boxed) >= 0.8 * len(boxed), [blue_edge(frame) for frame in decoded]
    expect(page.locator("#clip-download-status")).to_have_text("Annotated clip saved.")
