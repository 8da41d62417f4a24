"""The files "On this device" loads (server/model_files.py) and `export --format web`."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys

import pytest

from support.clips import default_detector_available


@pytest.fixture(scope="module")
def onnx_model(tiny_model_dir, tmp_path_factory):
    from face_emotion.inference.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(tiny_model_dir, path)
    return path


def _client(onnx_model, detector):
    from face_emotion.inference.backends import OnnxRuntimeBackend
    from face_emotion.inference.predictor import Predictor
    from face_emotion.server import create_app

    predictor = Predictor(OnnxRuntimeBackend(onnx_model, num_threads=1), detector)
    return create_app({"TESTING": True}, predictor=predictor).test_client()


@pytest.mark.skipif(not default_detector_available(), reason="the CenterFace model file is missing")
def test_manifest_names_the_served_bytes_by_hash_and_files_are_immutable(onnx_model):
    from face_emotion.faces.centerface_detector import CenterFaceDetector, default_model_path, runnable_model
    from face_emotion.inference.compact_onnx import BROWSER_INT8_MIN_ELEMENTS, compact_onnx
    from face_emotion.server.model_files import runtime_digest

    client = _client(onnx_model, CenterFaceDetector(num_threads=1))
    response = client.get("/model-files/manifest.json")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-cache"
    manifest = response.get_json()
    assert manifest["model"]["spec"]["classes"] == ["anger", "happiness", "sadness"]
    assert manifest["model"]["spec"]["preprocess"]["image_size"] == 32 and manifest["detector"]["name"] == "centerface"
    assert set(manifest["face_template"]) == {"right_eye", "left_eye", "nose", "mouth_right", "mouth_left"}
    # "exact": the bytes the server runs; the entry itself: their lighter form, which the page loads.
    exact = client.get("/model-files/" + manifest["model"]["exact"]["file"])
    assert exact.status_code == 200 and exact.data == onnx_model.read_bytes()
    light = client.get("/model-files/" + manifest["model"]["file"])
    assert light.data == compact_onnx(onnx_model.read_bytes(), int8_min_elements=BROWSER_INT8_MIN_ELEMENTS)
    assert manifest["model"]["weights"] == f"int8>={BROWSER_INT8_MIN_ELEMENTS}, fp16"
    assert manifest["model"]["bytes"] == len(light.data) < 0.5 * len(exact.data)
    for response, entry in ((exact, manifest["model"]["exact"]), (light, manifest["model"])):
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert hashlib.sha256(response.data).hexdigest() == entry["sha256"]
        assert entry["file"].startswith(entry["sha256"][:16] + "/")
    detector = client.get("/model-files/" + manifest["detector"]["exact"]["file"])
    assert detector.data == runnable_model(default_model_path().read_bytes())
    light_detector = client.get("/model-files/" + manifest["detector"]["file"])
    assert light_detector.data == compact_onnx(detector.data) and manifest["detector"]["weights"] == "fp16"
    stale = client.get("/model-files/0123456789abcdef/model.onnx")
    assert stale.status_code == 404 and stale.get_json()["error"]["code"] == "not_found"
    # Gzipped to a client that takes it: the same bytes after decompression.
    zipped = client.get("/model-files/" + manifest["model"]["file"], headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped.data) == light.data
    assert manifest["runtime"] == f"/model-files/runtime/{runtime_digest()[:16]}/" and manifest["runtime_ready"]
    page = client.get("/")
    assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert b'data-manifest="/model-files/manifest.json"' in page.data


def test_the_light_classifier_is_the_served_network(onnx_model, tmp_path):
    """The lighter file opens as a face-emotion model (its description kept) and answers as the
    served file does, within its rounding."""
    import numpy as np

    from face_emotion.inference.backends import OnnxRuntimeBackend
    from face_emotion.server.model_files import light_classifier

    light = light_classifier(onnx_model.read_bytes(), "none")
    (tmp_path / "light.onnx").write_bytes(light.data)
    served, lighter = (OnnxRuntimeBackend(path, num_threads=1) for path in (onnx_model, tmp_path / "light.onnx"))
    assert lighter.spec == served.spec
    batch = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    expected, got = served.run(batch), lighter.run(batch)
    assert 0 < np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()
    # A model quantized already goes as it is.
    assert light_classifier(b"int8 bytes", "static int8").data == b"int8 bytes"


def test_a_detector_the_browser_cannot_run_is_said_so(onnx_model):
    from face_emotion.faces import create_detector

    client = _client(onnx_model, create_detector("haar"))
    response = client.get("/model-files/manifest.json")
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["code"] == "on_device_unavailable" and "CenterFace" in error["message"]


@pytest.mark.skipif(not default_detector_available(), reason="the CenterFace model file is missing")
def test_export_web_writes_a_self_contained_site(onnx_model, tmp_path):
    import gzip

    from face_emotion.server.model_files import RUNTIME_DIR, RUNTIME_FILES, runtime_digest
    from face_emotion.server.web_export import WebExportError, export_web

    if not (RUNTIME_DIR / "ort.wasm.min.js").is_file():
        pytest.fail("onnxruntime-web is not installed: run `make setup`")
    site = tmp_path / "site"
    result = export_web(onnx_model, site)
    manifest = json.loads((site / "model-files" / "manifest.json").read_text())
    assert (site / "model-files" / manifest["model"]["exact"]["file"]).read_bytes() == onnx_model.read_bytes()
    for entry in (manifest["model"], manifest["detector"], manifest["detector"]["exact"]):
        data = (site / "model-files" / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    # onnxruntime-web under a name of its own hash, as the server serves it.
    assert manifest["runtime"] == f"./runtime/{runtime_digest()[:16]}/"
    for name in RUNTIME_FILES:
        assert (site / "model-files" / manifest["runtime"] / name).read_bytes() == (RUNTIME_DIR / name).read_bytes()
    assert not (site / "static" / "vendor").exists()
    page = (site / "index.html").read_text()
    assert 'data-device-only="1"' in page and 'http-equiv="Content-Security-Policy"' in page
    assert 'src="static/app.js"' in page and "/predict" not in page and "/docs" not in page
    assert result.files == sum(1 for p in site.rglob("*") if p.is_file())
    # A gzip copy beside each file that compresses, holding exactly its bytes; none for the rest.
    wasm = site / "model-files" / manifest["runtime"] / "ort-wasm-simd-threaded.wasm"
    compressed = {p.with_suffix("") for p in site.rglob("*.gz")}
    assert {wasm, site / "index.html", site / "static" / "app.js", site / "model-files" / "manifest.json"} <= compressed
    assert site / "static" / "favicon.svg" not in compressed  # 336 bytes: not worth it
    for original in compressed:
        assert gzip.decompress(original.with_name(original.name + ".gz").read_bytes()) == original.read_bytes()
    assert wasm.with_name(wasm.name + ".gz").stat().st_size < 0.35 * wasm.stat().st_size
    assert "gzip_static" in (site / "HOSTING.md").read_text()
    with pytest.raises(WebExportError, match="not an empty folder"):
        export_web(onnx_model, site)


def test_the_light_files_are_made_without_the_onnx_package():
    """The base install has ONNX Runtime but not onnx: the bundled model's light files are made
    there too, and ONNX Runtime opens them."""
    code = """
import sys
sys.modules["onnx"] = None
import hashlib
import onnxruntime
from face_emotion.server import create_app
client = create_app().test_client()
manifest = client.get("/model-files/manifest.json").get_json()
for entry in (manifest["model"], manifest["detector"]):
    data = client.get("/model-files/" + entry["file"]).data
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) < 0.55 * entry["exact"]["bytes"]
    onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
print(manifest["model"]["weights"], "/", manifest["detector"]["weights"])
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "int8>=131072, fp16 / fp16"
