"""gzip for the page's files (server/compression.py) and content-addressed runtime URLs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from support.fakes import FakePredictor

STATIC = Path(__file__).resolve().parents[1] / "src/face_emotion/server/static"


@pytest.fixture
def client():
    from face_emotion.server import create_app

    return create_app({"TESTING": True}, predictor=FakePredictor(faces=0)).test_client()


def test_a_client_that_takes_gzip_gets_it_and_the_same_bytes_after_decompression(client):
    original = (STATIC / "app.js").read_bytes()
    response = client.get("/static/app.js", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert response.status_code == 200 and response.headers["Content-Encoding"] == "gzip"
    assert response.mimetype == "text/javascript"
    assert "Accept-Encoding" in response.headers["Vary"]
    assert len(response.data) < 0.5 * len(original)
    assert gzip.decompress(response.data) == original
    assert response.headers["Cache-Control"] == "no-cache"  # not content-addressed: asked again each visit

    again = client.get("/static/app.js", headers={"Accept-Encoding": "gzip",
                                                  "If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0, identity", "br"])
def test_no_gzip_for_a_client_that_does_not_take_it(client, accept):
    original = (STATIC / "app.js").read_bytes()
    headers = {"Accept-Encoding": accept} if accept is not None else {}
    response = client.get("/static/app.js", headers=headers)
    assert response.status_code == 200 and "Content-Encoding" not in response.headers
    assert response.data == original
    # Still says it varies, so a shared cache does not hand these bytes to a gzip client or back.
    assert "Accept-Encoding" in response.headers["Vary"]
    gzipped = client.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
    assert response.headers["ETag"] != gzipped.headers["ETag"]
    # The gzip form's ETag does not match the plain form: a 200 with the plain bytes, not a 304.
    crossed = client.get("/static/app.js", headers={**headers, "If-None-Match": gzipped.headers["ETag"]})
    assert crossed.status_code == 200 and crossed.data == original


def test_tiny_files_go_as_they_are(client):
    response = client.get("/static/favicon.svg", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and "Content-Encoding" not in response.headers
    assert response.data == (STATIC / "favicon.svg").read_bytes() and "Vary" not in response.headers


def test_a_missing_or_escaping_static_path_is_404(client):
    for path in ("/static/nothing.js", "/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/app.js.gz"):
        assert client.get(path, headers={"Accept-Encoding": "gzip"}).status_code == 404, path


def test_a_gzip_copy_beside_a_file_is_used_only_when_it_holds_the_same_bytes(tmp_path):
    from face_emotion.server.compression import encode, gzip_bytes

    data = b"function f() { return 1; }\n" * 200
    made_earlier = gzip.compress(data, 1)  # not what the server would make itself
    assert encode(data, "text/javascript", precompressed=made_earlier).gz == made_earlier
    stale = gzip.compress(data + b"// changed\n")
    assert encode(data, "text/javascript", precompressed=stale).gz == gzip_bytes(data)
    assert encode(data, "text/javascript", precompressed=b"not gzip").gz == gzip_bytes(data)
    noise = __import__("os").urandom(4096)  # does not compress: no gzip form
    assert encode(noise, "application/octet-stream").gz is None


def test_onnxruntime_web_is_served_gzipped_under_a_name_of_its_hash(client):
    from face_emotion.server.model_files import RUNTIME_DIR, runtime_digest

    if runtime_digest() is None:
        pytest.fail(f"onnxruntime-web is missing in {RUNTIME_DIR}: run `make setup`")
    runtime = f"/model-files/runtime/{runtime_digest()[:16]}/"  # what the manifest names (test_on_device_files)
    for name, mimetype in (("ort.wasm.min.js", "text/javascript"), ("ort-wasm-simd-threaded.mjs", "text/javascript"),
                           ("ort-wasm-simd-threaded.wasm", "application/wasm")):
        response = client.get(runtime + name, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200 and response.mimetype == mimetype, name
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert gzip.decompress(response.data) == (RUNTIME_DIR / name).read_bytes()
    plain = client.get(runtime + "ort-wasm-simd-threaded.wasm")
    assert "Content-Encoding" not in plain.headers
    assert plain.get_data() == (RUNTIME_DIR / "ort-wasm-simd-threaded.wasm").read_bytes()
    for stale in ("/model-files/runtime/0123456789abcdef/ort.wasm.min.js", runtime + "package.json"):
        response = client.get(stale)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_large_gzip_forms_are_kept_on_disk_and_checked_before_use(monkeypatch):
    from face_emotion.cache import cache_path
    from face_emotion.server import compression

    data = b"".join(b"line %d of a large script\n" % i for i in range(60_000))  # 1.5 MB
    made = compression.encode(data, "text/javascript")
    kept = cache_path("gzip") / f"{made.sha256}.gz"
    assert kept.read_bytes() == made.gz and gzip.decompress(made.gz) == data

    def no_compression(_):
        raise AssertionError("compressed again")

    with monkeypatch.context() as patch:
        patch.setattr(compression, "gzip_bytes", no_compression)
        assert compression.encode(data, "text/javascript").gz == made.gz  # read from disk
    kept.write_bytes(gzip.compress(b"something else"))
    assert gzip.decompress(compression.encode(data, "text/javascript").gz) == data  # a wrong file is not served
    assert gzip.decompress(kept.read_bytes()) == data  # and is replaced
