"""Webcam mode in a real Chromium whose fake camera shows a face: frames are pipelined (never more
than two requests in flight), and the label and the rate follow the answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from support.browser import BROWSER, launch

pytestmark = [*BROWSER, pytest.mark.slow]


def write_face_clip(path, width: int = 320, height: int = 240, frames: int = 30) -> None:
    """A YUV4MPEG2 clip for Chromium's fake camera: the astronaut's head drifting sideways."""
    from skimage import data

    head = Image.fromarray(data.astronaut()).crop((130, 0, 330, 240)).resize((100, 120))
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            frame = Image.new("RGB", (width, height), (120, 130, 140))
            frame.paste(head, (40 + 4 * i, 60))
            ycbcr = np.asarray(frame.convert("YCbCr"))
            chroma = [ycbcr[..., c].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
                      for c in (1, 2)]
            out.write(b"FRAME\n" + ycbcr[..., 0].tobytes() + chroma[0].tobytes() + chroma[1].tobytes())


@pytest.fixture(scope="module")
def face_camera_browser(playwright, tmp_path_factory):
    clip = tmp_path_factory.mktemp("clip") / "face.y4m"
    write_face_clip(clip)
    browser = launch(playwright, f"--use-file-for-fake-video-capture={clip}")
    yield browser
    browser.close()


def test_webcam_frames_are_pipelined_two_at_a_time(face_camera_browser, server_url):
    from playwright.sync_api import expect

    context = face_camera_browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    in_flight = {"now": 0, "most": 0, "answered": 0}

    def started(request):
        if request.url.endswith("/predict"):
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])

    def ended(request):
        if request.url.endswith("/predict"):
            in_flight["now"] -= 1
            in_flight["answered"] += 1

    # 150 ms of network latency: a round trip is then always longer than the page's 33 ms gap
    # between frames, so a second frame must be sent while the first is on its way.
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 150,
                                                   "downloadThroughput": -1, "uploadThroughput": -1})
    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    page.goto(server_url + "/")
    page.click("#mode-webcam")
    page.click("#camera-start")
    expect(page.locator("#camera-rate")).to_contain_text("frames/s analysed", timeout=60_000)
    page.wait_for_timeout(3000)
    label = page.inner_text("#camera-label")
    measures = page.evaluate("() => performance.getEntriesByType('measure').map(m => m.name)")
    page.click("#camera-stop")
    page.wait_for_timeout(500)
    stopped_at = in_flight["answered"]
    page.wait_for_timeout(1000)
    context.close()

    assert not problems, problems
    assert in_flight["answered"] >= 4
    assert in_flight["most"] == 2  # pipelined, and never more than two frames on their way
    assert label.startswith("1 face"), label
    stages = {"webcam:capture+encode", "webcam:upload+server", "webcam:server", "webcam:json", "webcam:draw"}
    assert stages <= set(measures)
    assert in_flight["answered"] - stopped_at <= 0  # nothing is sent once the camera is off
