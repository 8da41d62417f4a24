"""Shared fixtures: tiny models and datasets built in tmp dirs, in seconds (helpers: tests/support);
the real-browser tests' server, browser and page, started once for the whole session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.synthetic import make_learnable_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="tiny models are built with torch (the 'train' extra)")
    from support.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def learnable_dataset(tmp_path_factory) -> Path:
    return make_learnable_dataset(tmp_path_factory.mktemp("learnable"), per_class=40)


@pytest.fixture(scope="session")
def predictor(tiny_model_dir):
    """The real Predictor on the tiny model, with the default face detector."""
    from face_emotion.inference.predictor import Predictor

    return Predictor.load(tiny_model_dir, num_threads=1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Face-crop caches go to a temporary folder, never the user's ~/.cache."""
    import os

    previous = os.environ.get("FACE_EMOTION_CACHE")
    os.environ["FACE_EMOTION_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("FACE_EMOTION_CACHE", None)
    else:
        os.environ["FACE_EMOTION_CACHE"] = previous


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """These machines have 2 cores shared with other jobs: two OpenMP threads fighting for a busy
    core made tiny networks many times slower. One thread keeps the tests fast and stable."""
    try:
        import torch
    except ImportError:  # the base install's test lane
        yield
        return

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------ real-browser tests (-m browser)

@pytest.fixture(scope="session")
def server_url(tiny_model_dir, tmp_path_factory):
    """`face-emotion serve` (gunicorn, one worker) of the tiny model on a free loopback port, one for
    every browser test of the session."""
    from support.clips import default_detector_available
    from support.server import ServerProcess, free_port, serve_command

    port = free_port()
    options = ["--model", str(tiny_model_dir), "--workers", "1", "--threads", "4", "--inference-threads", "1"]
    if not default_detector_available():
        options += ["--detector", "none"]  # the page still gets a box: the whole image
    server = ServerProcess(serve_command(port, *options), port, tmp_path_factory.mktemp("server") / "serve.log")
    # 300 s: the first start derives the ONNX form (an export in a child process), slow on a busy machine.
    with server.start(timeout_s=300):
        yield server.url


@pytest.fixture(scope="session")
def playwright():
    """One Playwright for the session: its sync API cannot run twice at once in a thread, so every
    browser, the fake-camera ones included, is launched from this one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright):
    from support.browser import launch

    browser = launch(playwright)
    yield browser
    browser.close()


@pytest.fixture
def page(browser, server_url):
    """The server's page in a fresh 1100 x 850 context; fails the test on a script error, a CSP
    violation or a request to another origin."""
    context = browser.new_context(viewport={"width": 1100, "height": 850})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    outside: list[str] = []
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith((server_url, "data:", "blob:")) else None)
    page.goto(server_url + "/")
    yield page
    context.close()
    assert not problems, problems  # CSP violations and script errors show up here
    assert not outside, f"the page loaded from other origins: {outside}"


@pytest.fixture(scope="session")
def annotated_clip(tmp_path_factory) -> Path:
    """Two faces crossing, written by the project's own annotated-clip writer (H.264 MP4), so the
    page tests also show that Chromium plays what `predict --annotate` writes."""
    from face_emotion.video import VideoSource
    from face_emotion.video.annotate import AnnotatedVideoWriter
    from support.clips import crossing_faces_clip

    root = tmp_path_factory.mktemp("page-clips")
    source = crossing_faces_clip(root / "source.mp4")
    target = root / "crossing.mp4"
    with VideoSource(source) as video:
        writer = AnnotatedVideoWriter(target, video.info.width, video.info.height, video.info.fps)
        for frame in video.frames():
            writer.write(frame.rgb, frame.time_s)
        writer.close()
    return target
