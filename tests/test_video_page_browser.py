"""Video mode of the page in a real headless Chromium against the real server (gunicorn, tiny model).

The clip is written by the project's own annotated-clip writer (H.264 MP4), so this also shows
that Chromium plays what `predict --annotate` writes.
"""

from __future__ import annotations

import io

import pytest

from support.browser import BROWSER, screenshot, wait_for
from support.clips import astronaut_face

pytestmark = BROWSER
av = pytest.importorskip("av")
expect = pytest.importorskip("playwright.sync_api").expect


def _boxes(page, t: float) -> dict[str, dict[str, float]]:
    page.evaluate("t => { document.getElementById('clip').currentTime = t; }", t)
    expect(page.locator("#clip-overlay")).to_have_attribute("data-time", f"{t:.3f}", timeout=10_000)
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#clip-overlay .clip-box')]
        .map(b => [b.dataset.track, {left: parseFloat(b.style.left), top: parseFloat(b.style.top),
                                     label: b.textContent}]))""")


def test_video_mode_plays_the_clip_with_boxes_in_sync_a_timeline_and_a_summary(page, annotated_clip):
    page.click("#mode-video")
    expect(page.locator("#video-panel")).to_be_visible()
    expect(page.locator("#photo-panel")).to_be_hidden()
    page.set_input_files("#clip-input", str(annotated_clip))
    # Chromium decodes the H.264 clip: it has a size and frames.
    wait_for(page, "document.getElementById('clip').readyState >= 2", 20)
    assert page.evaluate("document.getElementById('clip').videoWidth") == 480
    page.click("#clip-button")
    expect(page.locator("#clip-status")).to_contain_text("2 faces tracked", timeout=90_000)
    expect(page.locator("#track-table tbody tr")).to_have_count(2)
    expect(page.locator("#track-table tbody tr").first).to_contain_text("Face 1")

    # The answer the page got, to check the boxes against.
    analysis = page.evaluate("""async () => {
        const d = new FormData(); d.append('video', document.getElementById('clip-input').files[0]);
        return (await fetch('/predict/video', {method: 'POST', body: d})).json(); }""")
    width = analysis["summary"]["video"]["width"]
    early, late = _boxes(page, 0.4), _boxes(page, 2.4)
    assert set(early) == set(late) == {"1", "2"}
    frame = next(f for f in analysis["frames"] if abs(f["time_s"] - 2.4) < 1e-3)
    for face in frame["faces"]:
        assert late[str(face["track_id"])]["left"] == pytest.approx(100 * face["box"]["x"] / width, abs=0.05)
        assert late[str(face["track_id"])]["label"].startswith(f"{face['track_id']} {face['emotion']}")
    upper = min(early, key=lambda k: early[k]["top"])
    lower = max(early, key=lambda k: early[k]["top"])
    assert late[upper]["left"] > early[upper]["left"] + 30  # the upper face went right ...
    assert late[lower]["left"] < early[lower]["left"] - 30  # ... the lower one left, each keeping its number

    # Between two analysed frames (2.4 s and 2.6 s) boxes glide: 60% of the time, 60% of the way.
    # (2.52 s is a frame of the 25 fps clip, so the seek lands exactly there.)
    middle = _boxes(page, 2.52)
    after = _boxes(page, 2.6)
    expected = late[upper]["left"] + 0.6 * (after[upper]["left"] - late[upper]["left"])
    assert middle[upper]["left"] == pytest.approx(expected, abs=0.3)
    assert after[upper]["left"] != late[upper]["left"]

    # The timeline is drawn: coloured lines on the canvas.
    coloured = page.evaluate("""() => { const c = document.getElementById('timeline');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && Math.max(d[i], d[i+1], d[i+2]) -
            Math.min(d[i], d[i+1], d[i+2]) > 60) n++;
        return n; }""")
    assert coloured > 200
    page.click("#timeline-tracks .track-button >> nth=1")
    expect(page.locator("#timeline-tracks .track-button").nth(1)).to_have_attribute("aria-pressed", "true")

    # Playing: the boxes follow the clip's time.
    page.evaluate("() => { const v = document.getElementById('clip'); v.currentTime = 0; return v.play(); }")
    wait_for(page, "parseFloat(document.getElementById('clip-overlay').dataset.time) > 0.5", 10)
    assert page.locator("#clip-overlay .clip-box").count() == 2
    screenshot(page, "video-mode.png")
    page.click("#mode-photo")  # leaving the mode pauses the clip
    assert page.evaluate("document.getElementById('clip').paused")


def test_video_mode_says_why_a_file_is_refused(page, tmp_path):
    fake = tmp_path / "photo.mp4"
    buffer = io.BytesIO()
    astronaut_face().save(buffer, format="PNG")
    fake.write_bytes(buffer.getvalue())
    page.click("#mode-video")
    page.set_input_files("#clip-input", str(fake))
    page.click("#clip-button")
    expect(page.locator("#clip-status")).to_contain_text("could not be analysed", timeout=30_000)
    expect(page.locator("#clip-status")).to_contain_text("PNG image")


def test_webcam_tracking_keeps_numbers_and_steadies_labels(page):
    """tracking.js, as the webcam loop uses it: two faces crossing at 5 frames a second keep their
    numbers, and a face whose raw label flips every frame shows one steady label."""
    result = page.evaluate("""() => {
        const tracker = new window.FaceTracking.Tracker(window.FaceTracking.pageSettings());
        const face = (x, y, p) => ({ box: { x: x, y: y, width: 90, height: 110 }, emotion: "?", confidence: 0,
                                     probabilities: { happiness: p, sadness: 1 - p } });
        const ids = [], labels = [], raw = [];
        for (let i = 0; i < 25; i++) {  // 5 s at 5 frames a second
            const t = i * 0.2, p = i % 2 ? 0.45 : 0.6;  // raw top label flips every frame
            raw.push(p > 0.5 ? "happiness" : "sadness");
            const out = tracker.update([face(20 + 14 * i, 40, p), face(380 - 14 * i, 100, 0.2)], t);
            ids.push(out.map((f) => f.track_id));
            labels.push(out[0].emotion);
        }
        return { ids: ids, labels: labels, raw: raw };
    }""")
    assert all(pair == [1, 2] for pair in result["ids"])  # the upper face is always 1, through the crossing
    flips = lambda labels: sum(a != b for a, b in zip(labels, labels[1:]))  # noqa: E731
    assert flips(result["raw"]) == 24
    assert flips(result["labels"][3:]) == 0 and result["labels"][-1] == "happiness"
