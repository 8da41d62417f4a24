"""The page in a real headless Chromium against the real server (gunicorn, real Predictor, tiny model).

The server, the browser and the `page` fixture are the session's (tests/conftest.py,
tests/support/browser.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from support.browser import BROWSER, screenshot
from support.clips import default_detector_available
from support.photos import GROUP_FIVE, group_with_boxes

pytestmark = BROWSER
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(path, quality=90)
    return path


def test_upload_a_photo_shows_a_box_labels_and_bars(page, photo):
    page.set_input_files("#file-input", str(photo))
    expect(page.locator("#preview")).to_be_visible()
    page.click("#predict-button")
    box = page.locator(".face-box").first
    expect(box).to_be_visible(timeout=30_000)
    expect(page.locator("#status")).to_contain_text("face")
    expect(page.locator("#bars li")).to_have_count(3)
    expect(page.locator(".face-label").first).to_have_text(re.compile(r"^1 (anger|happiness|sadness) \d+%$"))
    # The box sits on the astronaut's face (around x 180-270, y 60-180 of 512x512), not anywhere.
    shown = page.locator("#preview").bounding_box()
    rect = box.bounding_box()
    centre_x = (rect["x"] + rect["width"] / 2 - shown["x"]) / shown["width"] * 512
    assert 100 < centre_x < 400
    # Keyboard: the face list holds real buttons; selecting one keeps the bars for it.
    face_button = page.locator(".face-item").first
    face_button.focus()
    page.keyboard.press("Enter")
    expect(face_button).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#bars-heading")).to_have_text("Probabilities for face 1")
    screenshot(page, "photo-result.png")


def test_heatmap_toggle_asks_for_and_shows_heatmaps(page, photo):
    page.set_input_files("#file-input", str(photo))
    page.click("#predict-button")
    expect(page.locator(".face-box").first).to_be_visible(timeout=30_000)
    expect(page.locator(".heatmap-legend")).to_be_hidden()  # no legend without heatmaps
    page.check("#heatmap-toggle")
    expect(page.locator("canvas.heatmap").first).to_be_attached(timeout=30_000)
    expect(page.locator("#stage")).to_have_class("stage show-heatmap")
    expect(page.locator(".heatmap-legend")).to_be_visible()  # the colour scale explains the map
    expect(page.locator(".heatmap-legend")).to_contain_text("more important")
    screenshot(page, "photo-heatmap.png")


def test_a_text_file_gives_a_clear_error(page, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a photo")
    page.set_input_files("#file-input", str(text))
    page.click("#predict-button")
    status = page.locator("#status")
    expect(status).to_have_class("status error", timeout=30_000)
    # Said once: the server's message is complete on its own and the page does not repeat it.
    expect(status).to_have_text("This file is not an image we can read (not a recognised image format).")
    expect(page.locator(".face-box")).to_have_count(0)


def test_a_photo_without_a_face_says_so(page, tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 150), (180, 180, 175)).save(blank)
    page.set_input_files("#file-input", str(blank))
    page.click("#predict-button")
    status = page.locator("#status")
    if default_detector_available():
        expect(status).to_contain_text("No face found", timeout=30_000)
    else:  # whole-image mode: the image is the face
        expect(status).to_contain_text("face", timeout=30_000)


def test_webcam_mode_with_the_fake_camera_updates_the_live_label(page):
    page.click("#mode-webcam")
    expect(page.locator("#webcam-panel")).to_be_visible()
    page.click("#camera-start")
    label = page.locator("#camera-label")
    # Chromium's fake camera shows a moving test pattern: no face, or (whole-image mode) one.
    expect(label).to_have_text(re.compile(r"^(No face in view\.|\d+ faces?: \w+ \(\d+%\)\.)$"), timeout=30_000)
    expect(page.locator("#camera-rate")).to_contain_text("frames/s", timeout=30_000)
    screenshot(page, "webcam.png")
    page.click("#camera-stop")
    expect(label).to_have_text("Camera off.")


def test_page_fits_a_phone_screen(browser, server_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.goto(server_url + "/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width}px wide"
    expect(page.locator("#predict-button")).to_be_visible()
    screenshot(page, "phone.png")
    context.close()


# Six faces in an 800 x 600 photo, largest first, where plain "label above the box" fails: two
# touching boxes at the top edge, one at the right edge, two at the bottom.
SIX_FACES = [(300, 200, 200, 200), (0, 0, 120, 120), (130, 0, 120, 120), (690, 10, 110, 110),
             (20, 460, 110, 110), (680, 470, 110, 120)]


def _six_face_answer() -> dict:
    probabilities = {"anger": 0.05, "happiness": 0.87, "sadness": 0.08}
    faces = [{"box": {"x": x, "y": y, "width": w, "height": h}, "score": 0.9, "emotion": "happiness",
              "confidence": 0.87, "probabilities": probabilities} for x, y, w, h in SIX_FACES]
    return {"emotion": "happiness", "confidence": 0.87, "faces": faces, "image": {"width": 800, "height": 600},
            "error": None, "model": "tiny-test-model", "elapsed_ms": 1.0}


def _overlap(a: dict, b: dict, slack: float = 0.5) -> bool:
    return (a["x"] + slack < b["x"] + b["width"] and b["x"] + slack < a["x"] + a["width"]
            and a["y"] + slack < b["y"] + b["height"] and b["y"] + slack < a["y"] + a["height"])


@pytest.mark.parametrize("viewport", [{"width": 390, "height": 844}, {"width": 844, "height": 390}])
def test_six_faces_on_a_phone_keep_their_labels_inside_the_photo_and_apart(browser, server_url, tmp_path, viewport):
    import json

    context = browser.new_context(viewport=viewport, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    # The page's own code against a fixed answer: the layout, not the model, is under test.
    page.route("**/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                          body=json.dumps(_six_face_answer())))
    page.goto(server_url + "/")
    photo = tmp_path / "group.png"
    Image.new("RGB", (800, 600), (150, 140, 130)).save(photo)
    page.set_input_files("#file-input", str(photo))
    page.click("#predict-button")
    expect(page.locator(".face-box")).to_have_count(6, timeout=30_000)
    expect(page.locator("#status")).to_contain_text("6 faces")
    shown = page.locator("#preview").bounding_box()
    boxes = [page.locator(".face-box").nth(i).bounding_box() for i in range(6)]
    labels = [page.locator(".face-label").nth(i).bounding_box() for i in range(6)]
    for i, label in enumerate(labels):
        assert shown["x"] - 0.5 <= label["x"] and label["x"] + label["width"] <= shown["x"] + shown["width"] + 0.5, \
            (i, label, shown)
        assert shown["y"] - 0.5 <= label["y"] and label["y"] + label["height"] <= shown["y"] + shown["height"] + 0.5, \
            (i, label, shown)
        for j, other in enumerate(labels[:i]):
            assert not _overlap(label, other), f"label {i + 1} covers label {j + 1}"
        for j, box in enumerate(boxes):
            assert j == i or not _overlap(label, box), f"label {i + 1} covers face {j + 1}'s box"
    # A phone's picture carries the numbers; the list under it has the words.
    assert page.locator(".face-label").all_text_contents() == [str(i) for i in range(1, 7)]
    expect(page.locator(".face-item").nth(5)).to_have_text("Face 6: happiness, 87.0%")
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    screenshot(page, f"phone-six-faces-{viewport['width']}.png")
    context.close()


def _area(a: dict, b: dict) -> float:
    """The area of the intersection of two bounding boxes."""
    w = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return max(0.0, w) * max(0.0, h)


def test_five_faces_on_a_390px_screen_are_numbered_and_no_label_covers_a_face(browser, server_url, tmp_path):
    import json

    # The five-person test photo (tests/support/photos.py), with the boxes where its faces are.
    image, pasted = group_with_boxes(*GROUP_FIVE)
    photo = tmp_path / "group-five.png"
    image.save(photo)
    faces = [{"box": {"x": x, "y": y, "width": w, "height": h}, "score": 0.9, "emotion": "happiness",
              "confidence": 0.87, "probabilities": {"anger": 0.05, "happiness": 0.87, "sadness": 0.08}}
             for x, y, w, h in pasted]
    answer = {"emotion": "happiness", "confidence": 0.87, "faces": faces, "image": {"width": 900, "height": 420},
              "error": None, "model": "tiny-test-model", "elapsed_ms": 1.0}
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True)
    page = context.new_page()
    page.route("**/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                          body=json.dumps(answer)))
    page.goto(server_url + "/")
    page.set_input_files("#file-input", str(photo))
    page.click("#predict-button")
    expect(page.locator(".face-box")).to_have_count(5, timeout=30_000)
    boxes = [page.locator(".face-box").nth(i).bounding_box() for i in range(5)]
    labels = [page.locator(".face-label").nth(i).bounding_box() for i in range(5)]
    for i, label in enumerate(labels):
        for j, box in enumerate(boxes):
            covered = _area(label, box) / (box["width"] * box["height"])
            assert covered < 0.02, f"label {i + 1} covers {covered:.0%} of face {j + 1}"
    assert page.locator(".face-label").all_text_contents() == ["1", "2", "3", "4", "5"]
    expect(page.locator(".face-item").nth(2)).to_have_text("Face 3: happiness, 87.0%")
    screenshot(page, "phone-five-faces.png")
    context.close()


def test_on_this_device_the_heatmap_switch_and_its_legend_are_hidden(page):
    # Heatmaps are a server feature: in on-device mode there is nothing to switch on or explain.
    expect(page.locator("#heatmap-toggle")).to_be_visible()
    page.check("#heatmap-toggle")
    expect(page.locator(".heatmap-legend")).to_be_visible()
    page.check("#device-local")
    expect(page.locator("#heatmap-toggle")).to_be_hidden()
    expect(page.locator(".heatmap-legend")).to_be_hidden()
    expect(page.locator("#device-status")).to_contain_text("Running in this browser", timeout=120_000)
    page.uncheck("#device-local")
    expect(page.locator("#heatmap-toggle")).to_be_visible()


def test_the_static_export_opened_as_a_file_says_how_to_serve_it(browser, tiny_model_dir, tmp_path):
    from face_emotion.server.web_export import export_web

    site = tmp_path / "site"
    export_web(tiny_model_dir, site, detector=None if default_detector_available() else "none")
    context = browser.new_context()
    page = context.new_page()
    page.goto((site / "index.html").as_uri())  # a double-click on the file
    status = page.locator("#device-status")
    expect(status).to_contain_text("python -m http.server 8000", timeout=30_000)
    expect(status).to_contain_text("open localhost:8000")
    expect(status).to_have_class(re.compile(r"\berror\b"))
    context.close()


def test_docs_page_renders(browser, server_url):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server_url + "/docs")
    expect(page.locator("h2", has_text="/predict/batch")).to_be_visible()
    context.close()
