"""Time and page limits of the service: the per-request inference deadline, and what the page may load.

The deadline is tested with a deliberately slow fake predictor (it blocks on an Event that every test
releases at the end, so no inference thread outlives its test). The page checks parse what the server
serves (rendered templates, static files, headers) rather than the files on disk, so a value the
server fills in (the model's name, its classes) is covered too.
"""

from __future__ import annotations

import io
import re
import threading
import time
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from face_emotion.server import ConfigError, ServerConfig, create_app
from support.fakes import CLASSES, FakePredictor
from support.images import solid_image_bytes


def png_bytes(size=(24, 20)) -> bytes:
    return solid_image_bytes(size, (120, 90, 60))


class SlowPredictor(FakePredictor):
    """The fake predictor (one whole-image face); each call takes ``delay_s``, or blocks until
    ``release`` is set."""

    def __init__(self, delay_s: float | None = None, name: str = "slow-model", classes=CLASSES):
        super().__init__(faces=1, name=name, classes=classes, detector_name="none")
        self.delay_s = delay_s
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def predict(self, image, *, explain=False, detect=True):
        self.calls.append({"size": image.size, "explain": explain, "detect": detect})
        self.started.release()
        if self.delay_s is None:
            self.release.wait(30)  # "forever", until the test lets go
        else:
            time.sleep(self.delay_s)
        return self.answer(image, explain=explain, detect=False)


@pytest.fixture
def stuck():
    predictor = SlowPredictor()
    yield predictor
    predictor.release.set()  # let the inference thread finish


def assert_timeout(response, timeout_s: float) -> str:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == "timeout"
    message = body["error"]["message"]
    assert f"{timeout_s:g} s" in message
    assert "Traceback" not in response.get_data(as_text=True)
    return message


# ---- the inference deadline --------------------------------------------------------------

def test_a_prediction_that_cannot_finish_is_cut_off_with_a_json_timeout(stuck):
    app = create_app({"inference_timeout_s": 0.3}, predictor=stuck)
    client = app.test_client()
    start = time.monotonic()
    response = client.post("/predict", data=png_bytes(), content_type="image/png")
    elapsed = time.monotonic() - start
    assert_timeout(response, 0.3)
    assert 0.25 <= elapsed < 5, elapsed  # cut at the deadline, not when the prediction ends (30 s)
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/health").status_code == 200  # the worker still answers meanwhile
    # Once the stuck prediction ends, the slot is free again and requests are answered.
    stuck.release.set()
    stuck.delay_s = 0.0
    deadline = time.monotonic() + 10
    while True:
        response = client.post("/predict", data=png_bytes(), content_type="image/png")
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert response.status_code == 200 and response.get_json()["emotion"] == "happiness"


def test_requests_queued_behind_a_stuck_prediction_time_out_too(stuck):
    """One slot per worker: while it is held, waiting requests get the JSON timeout at their own deadline."""
    app = create_app({"inference_timeout_s": 0.4}, predictor=stuck)
    results: list = []

    def first():
        results.append(app.test_client().post("/predict", data=png_bytes(), content_type="image/png"))

    thread = threading.Thread(target=first)
    thread.start()
    assert stuck.started.acquire(timeout=10)  # the first prediction holds the slot now
    start = time.monotonic()
    second = app.test_client().post("/predict", data=png_bytes(), content_type="image/png")
    assert time.monotonic() - start < 5
    assert_timeout(second, 0.4)
    assert len(stuck.calls) == 1  # the second never reached the model
    thread.join(10)
    assert_timeout(results[0], 0.4)


def test_a_batch_shares_one_deadline_and_is_answered_whole():
    """Eight 0.2 s images against a 0.5 s deadline: one 503 after ~0.5 s, not eight item errors after 1.6 s."""
    predictor = SlowPredictor(delay_s=0.2)
    app = create_app({"inference_timeout_s": 0.5, "max_batch": 8}, predictor=predictor)
    data = {"images": [(io.BytesIO(png_bytes()), f"{i}.png") for i in range(8)]}
    start = time.monotonic()
    response = app.test_client().post("/predict/batch", data=data)
    elapsed = time.monotonic() - start
    assert_timeout(response, 0.5)
    assert elapsed < 1.5, elapsed
    assert len(predictor.calls) < 8


def test_predictions_within_the_deadline_are_untouched():
    predictor = SlowPredictor(delay_s=0.05)
    client = create_app({"inference_timeout_s": 5}, predictor=predictor).test_client()
    response = client.post("/predict", data=png_bytes(), content_type="image/png")
    assert response.status_code == 200 and response.get_json()["faces"][0]["box"]["width"] == 24
    data = {"images": [(io.BytesIO(png_bytes()), "a.png"), (io.BytesIO(png_bytes((10, 10))), "b.png")]}
    results = client.post("/predict/batch", data=data).get_json()["results"]
    assert [r["image"]["width"] for r in results] == [24, 10]


def test_inference_threads_do_not_pile_up_after_timeouts(stuck):
    """A timed-out prediction keeps its slot; later ones wait for it instead of starting more threads."""
    app = create_app({"inference_timeout_s": 0.1}, predictor=stuck)
    client = app.test_client()
    before = threading.active_count()
    for _ in range(5):
        assert_timeout(client.post("/predict", data=png_bytes(), content_type="image/png"), 0.1)
    assert len(stuck.calls) == 1
    assert threading.active_count() <= before + 1  # one inference thread (inference_concurrency 1)


# ---- the deadline as a setting -----------------------------------------------------------

def test_the_deadline_is_a_setting_like_the_others():
    assert ServerConfig().inference_timeout_s == 30.0
    config = ServerConfig.from_env({"FACE_EMOTION_INFERENCE_TIMEOUT_S": "2.5"})
    assert config.inference_timeout_s == 2.5
    given = ServerConfig.from_env({"FACE_EMOTION_INFERENCE_TIMEOUT_S": "2.5"}, inference_timeout_s=7)
    assert given.inference_timeout_s == 7
    assert create_app({"inference_timeout_s": 4}, predictor=SlowPredictor(0)).extensions["face_emotion"].config \
        .inference_timeout_s == 4


@pytest.mark.parametrize("text", ["0", "-1", "soon", "nan", "1e9"])
def test_bad_deadlines_are_refused_with_the_variable_named(text):
    with pytest.raises(ConfigError, match="FACE_EMOTION_INFERENCE_TIMEOUT_S"):
        ServerConfig.from_env({"FACE_EMOTION_INFERENCE_TIMEOUT_S": text})


def test_the_deadline_fires_before_gunicorns_worker_timeout(tiny_model_dir, monkeypatch):
    """gunicorn kills a silent worker without a JSON answer, so serve insists the app's deadline comes first."""
    from face_emotion.cli import main
    from face_emotion.server import runner

    assert ServerConfig().inference_timeout_s < runner.RunOptions().timeout_s  # the defaults agree
    seen = {}
    monkeypatch.setattr(runner, "run_gunicorn", lambda config, options: seen.update(config=config, options=options))
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir), "--inference-timeout", "12",
                                       "--timeout", "20"])
    assert result.exit_code == 0, result.output
    assert seen["config"].inference_timeout_s == 12 and seen["options"].timeout_s == 20
    seen.clear()
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir), "--inference-timeout", "90"])
    assert result.exit_code == 1 and not seen
    assert "--inference-timeout" in result.output and "--timeout" in result.output
    assert "Traceback" not in result.output
    monkeypatch.setenv("FACE_EMOTION_INFERENCE_TIMEOUT_S", "0")
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir)])
    assert result.exit_code == 1 and "FACE_EMOTION_INFERENCE_TIMEOUT_S" in result.output


def test_openapi_documents_the_timeout():
    client = create_app(predictor=SlowPredictor(0)).test_client()
    spec = client.get("/openapi.json").get_json()
    for path in ("/predict", "/predict/batch"):
        assert spec["paths"][path]["post"]["responses"]["503"] == {"$ref": "#/components/responses/Timeout"}
    assert "timeout" in spec["components"]["responses"]["Timeout"]["description"]


# ---- the page: nothing a CSP would have to allow by exception, nothing from elsewhere ----------

class PageParser(HTMLParser):
    """Collects what a strict CSP cares about in an HTML document."""

    URL_ATTRIBUTES = frozenset({"src", "href", "action", "formaction", "poster", "data", "srcset", "background",
                                "xlink:href"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict] = []  # attributes of each <script>, plus its text
        self.style_elements = 0
        self.handlers: list[tuple[str, str]] = []  # (tag, on* attribute)
        self.style_attributes: list[str] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.forbidden_tags: list[str] = []
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append((tag, name))
            if name == "style":
                self.style_attributes.append(tag)
            if name in self.URL_ATTRIBUTES and value is not None:
                self.urls.append((tag, name, value))
        if tag == "script":
            self._in_script = {**attributes, "text": ""}
            self.scripts.append(self._in_script)
        elif tag == "style":
            self.style_elements += 1
        elif tag in ("iframe", "object", "embed", "base", "frame", "applet"):
            self.forbidden_tags.append(tag)
        elif tag == "meta" and (attributes.get("http-equiv") or "").lower() == "refresh":
            self.forbidden_tags.append("meta refresh")

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        if self._in_script is not None:
            self._in_script["text"] += data

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None


def parse_page(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    parser.close()
    return parser


# URLs that name another host but are never fetched: XML namespaces.
NAMESPACE_URLS = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink", "http://www.w3.org/1999/xhtml")
ABSOLUTE_URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.\-]+(?::\d+)?[^\s"'`)<>]*""")


def other_host_urls(text: str, own_host: str = "localhost") -> list[str]:
    """Absolute URLs in ``text`` to any host but ``own_host`` (the docs' curl examples name the server)."""
    found = []
    for match in ABSOLUTE_URL.finditer(text):
        url = match.group(0)
        if url.startswith(NAMESPACE_URLS) or urlsplit(url).hostname == own_host:
            continue
        if url.startswith("//") and not re.match(r"//[A-Za-z0-9\-]+\.[A-Za-z]", url):
            continue  # a JS/CSS comment (// like this), not a protocol-relative URL
        found.append(url)
    return found


def assert_same_origin(url: str) -> None:
    parts = urlsplit(url)
    assert parts.scheme in ("", "data", "blob") and not parts.netloc, f"URL to another origin: {url!r}"
    assert parts.scheme != "javascript", url


def assert_strict_page(client, path: str) -> PageParser:
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    page = parse_page(html)
    for script in page.scripts:
        assert script.get("src"), f"inline <script> in {path}: {script['text'][:80]!r}"
        assert not script["text"].strip(), f"<script src> with a body in {path}"
    assert page.style_elements == 0, f"<style> element in {path}"
    assert not page.handlers, f"inline event handlers in {path}: {page.handlers}"
    assert not page.style_attributes, f"style attributes in {path}: {page.style_attributes}"
    assert not page.forbidden_tags, f"{page.forbidden_tags} in {path}"
    for _tag, _name, value in page.urls:
        if value.startswith("#"):
            continue
        assert_same_origin(value)
    assert not other_host_urls(html), f"{path} names other hosts: {other_host_urls(html)}"
    return page


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def assert_strict_csp(response) -> None:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"no CSP on {response.request.path}"
    directives = csp_directives(header)
    everything = " ".join(" ".join(v) for v in directives.values())
    for loose in ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "'strict-dynamic'"):
        assert loose not in everything, f"{loose} in the CSP"
    # WebAssembly compilation (ONNX Runtime Web, "On this device") and nothing else.
    assert everything.count("'wasm-unsafe-eval'") == 1
    for name, sources in directives.items():
        for source in sources:
            # No wildcard and no scheme-wide source ("https:" allows every https host).
            assert source != "*" and source not in ("http:", "https:"), f"{name} {source}"
            assert not source.startswith(("http://", "https://", "*.")), f"another origin in {name}: {source}"
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["connect-src"] == ["'self'"]


@pytest.fixture
def page_client():
    return create_app({"TESTING": True}, predictor=SlowPredictor(0)).test_client()


def test_served_pages_have_no_inline_code_and_no_other_origin(page_client):
    for path in ("/", "/docs"):
        assert_strict_page(page_client, path)


def test_every_asset_a_page_links_is_same_origin_and_clean(page_client):
    assets = set()
    for path in ("/", "/docs"):
        page = assert_strict_page(page_client, path)
        assets |= {value for _tag, name, value in page.urls if value.startswith("/static/")}
    assert {a.rsplit("/", 1)[1] for a in assets} >= {"app.js", "style.css"}
    for asset in sorted(assets):
        response = page_client.get(asset)
        assert response.status_code == 200, asset
        text = response.get_data(as_text=True)
        assert not other_host_urls(text), f"{asset} names other hosts: {other_host_urls(text)}"
        assert_strict_csp(response)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        if asset.endswith(".js"):
            # What script-src 'self' without 'unsafe-eval' forbids, and HTML injection sinks.
            for sink in (r"\beval\s*\(", r"new\s+Function\s*\(", r"set(?:Timeout|Interval)\s*\(\s*[\"'`]",
                         r"\.innerHTML\b", r"\.outerHTML\b", r"insertAdjacentHTML", r"document\.write",
                         r"setAttribute\(\s*[\"']on", r"setAttribute\(\s*[\"']style[\"']", r"\bimport\s*\(",
                         r"javascript:"):
                assert not re.search(sink, text), f"{asset} uses {sink}"
            # Every request the script makes goes to this origin.
            for target in re.findall(r"""fetch\(\s*([^,)]+)""", text):
                assert target.strip().startswith(("\"/", "'/", "`/", "url", "endpoint", "path")), target
        if asset.endswith(".css"):
            assert "@import" not in text and "expression(" not in text
            for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", text):
                assert_same_origin(url.strip())


def test_values_the_server_fills_in_cannot_add_script():
    """A model's name and classes are rendered into the page: they must come out as text."""
    hostile = SlowPredictor(0, name='</title><script>alert("name")</script>',
                            classes=('<img src=x onerror=alert(1)>', "a\" onclick=\"alert(2)", "happiness"))
    client = create_app({"TESTING": True}, predictor=hostile).test_client()
    page = assert_strict_page(client, "/")
    assert all(s.get("src") for s in page.scripts)
    html = client.get("/").get_data(as_text=True)
    assert "&lt;script&gt;" in html and "<img src=x" not in html


def test_csp_and_security_headers_on_every_kind_of_answer(page_client):
    responses = [
        page_client.get("/"), page_client.get("/docs"), page_client.get("/health"), page_client.get("/openapi.json"),
        page_client.get("/nowhere"), page_client.post("/predict", data=b"junk", content_type="image/png"),
        page_client.post("/predict", data=b"{}", content_type="application/json"), page_client.get("/predict"),
    ]
    for response in responses:
        assert_strict_csp(response)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        if response.status_code >= 400:
            assert response.mimetype == "application/json"
            assert "Traceback" not in response.get_data(as_text=True)
