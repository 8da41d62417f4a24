"""The JSON API through Flask's test client: every endpoint, every error, headers, limits, config.

Most tests use a fake predictor (instant, deterministic); the last group runs the real Predictor
on the tiny random model from conftest.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from face_emotion.server import ConfigError, ServerConfig, create_app
from support.fakes import CLASSES, FakePredictor
from support.images import solid_image_bytes

SERVER_DIR = Path(__file__).resolve().parent.parent / "src" / "face_emotion" / "server"
def png_bytes(size=(40, 30), colour=(200, 120, 90), fmt="PNG") -> bytes:
    return solid_image_bytes(size, colour, fmt)


def one_pixel_png() -> bytes:
    return png_bytes((1, 1))


@pytest.fixture
def fake():
    return FakePredictor()


@pytest.fixture
def app(fake):
    return create_app({"TESTING": True, "max_upload_mb": 1, "max_pixels": 1_000_000, "max_batch": 3},
                      predictor=fake)


@pytest.fixture
def client(app):
    return app.test_client()


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body["error"]["message"]


# ---- POST /predict -------------------------------------------------------------------------

def test_predict_multipart_gives_the_documented_shape(client, fake):
    response = client.post("/predict", data={"image": (io.BytesIO(png_bytes()), "face.png")})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"emotion", "confidence", "faces", "image", "error", "model", "elapsed_ms"}
    assert body["error"] is None
    assert body["emotion"] == "happiness" and body["confidence"] == 0.7
    assert body["image"] == {"width": 40, "height": 30}
    assert body["model"] == "fake-model"
    assert body["elapsed_ms"] >= 0
    assert len(body["faces"]) == 2
    assert body["faces"][0]["box"] == {"x": 1, "y": 1, "width": 20, "height": 15}
    assert "heatmap_png" not in body["faces"][0]
    assert fake.calls == [{"size": (40, 30), "mode": "RGB", "explain": False, "detect": True}]


def test_predict_raw_body_with_image_content_type(client):
    response = client.post("/predict", data=png_bytes(fmt="JPEG"), content_type="image/jpeg")
    assert response.status_code == 200
    assert response.get_json()["image"] == {"width": 40, "height": 30}


def test_raw_octet_stream_is_accepted_for_curl_users(client):
    assert client.post("/predict", data=png_bytes(), content_type="application/octet-stream").status_code == 200


def test_explain_adds_a_base64_png_heatmap_per_face(client, fake):
    response = client.post("/predict?explain=1", data=png_bytes(), content_type="image/png")
    faces = response.get_json()["faces"]
    assert all(Image.open(io.BytesIO(base64.b64decode(f["heatmap_png"]))).format == "PNG" for f in faces)
    assert fake.calls[-1]["explain"] is True


def test_detect_0_treats_the_image_as_one_face(client, fake):
    body = client.post("/predict?detect=0", data=png_bytes(), content_type="image/png").get_json()
    assert fake.calls[-1]["detect"] is False
    assert body["faces"][0]["box"] == {"x": 0, "y": 0, "width": 40, "height": 30}


def test_bad_flag_value_is_400(client):
    assert_error(client.post("/predict?explain=maybe", data=png_bytes(), content_type="image/png"),
                 400, "bad_parameter")


def test_no_face_gives_nulls_not_an_error():
    app = create_app({"TESTING": True}, predictor=FakePredictor(faces=0))
    body = app.test_client().post("/predict", data=png_bytes(), content_type="image/png").get_json()
    assert body["faces"] == [] and body["emotion"] is None and body["confidence"] is None


def test_exif_rotation_is_applied_before_prediction(client, fake):
    image = Image.new("RGB", (40, 20), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    body = client.post("/predict", data=buffer.getvalue(), content_type="image/jpeg").get_json()
    assert body["image"] == {"width": 20, "height": 40}


# ---- errors ------------------------------------------------------------------------------

def test_missing_image_field_is_400_and_names_the_field(client):
    message = assert_error(client.post("/predict", data={"file": (io.BytesIO(png_bytes()), "a.png")}),
                           400, "no_image")
    assert "'image'" in message and "file" in message


def test_empty_upload_is_400(client):
    assert_error(client.post("/predict", data={"image": (io.BytesIO(b""), "")}), 400, "no_image")
    assert_error(client.post("/predict", data=b"", content_type="image/png"), 400, "no_image")
    assert_error(client.post("/predict"), 400, "no_image")


def test_text_file_is_400_not_an_image(client):
    data = {"image": (io.BytesIO(b"hello, I am not a photo"), "notes.txt", "text/plain")}
    message = assert_error(client.post("/predict", data=data), 400, "invalid_image")
    # The decoder's message, complete on its own: the page puts it in a sentence of its own, so a
    # prefix here ("not a readable image: not a recognised ...") made the page repeat itself.
    assert message == "not a recognised image format"


def test_truncated_image_is_400(client):
    data = png_bytes((64, 64), fmt="JPEG")[:200]
    assert_error(client.post("/predict", data=data, content_type="image/jpeg"), 400, "invalid_image")


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "image/svg+xml",
                                          "application/x-www-form-urlencoded"])
def test_unsupported_content_type_is_415(client, content_type):
    message = assert_error(client.post("/predict", data=b"<svg/>", content_type=content_type),
                           415, "unsupported_media_type")
    assert "image/" in message


def test_body_over_the_upload_limit_is_413(client):
    big = b"\xff" * (1024 * 1024 + 10)
    assert_error(client.post("/predict", data=big, content_type="image/jpeg"), 413, "payload_too_large")
    message = assert_error(client.post("/predict", data={"image": (io.BytesIO(big), "big.jpg")}),
                           413, "payload_too_large")
    assert "1 MB" in message


def test_pixel_count_over_the_limit_is_413(client, fake):
    data = png_bytes((1001, 1000))  # a small file that decodes to just over 1 megapixel
    message = assert_error(client.post("/predict", data=data, content_type="image/png"), 413, "image_too_large")
    assert "1,000,000" in message
    assert fake.calls == []


def test_unknown_path_and_wrong_method_are_json(client):
    assert_error(client.get("/no/such/thing"), 404, "not_found")
    response = client.get("/predict")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert_error(client.delete("/health"), 405, "method_not_allowed")


def test_a_crash_inside_the_model_is_a_json_500_without_details(caplog):
    app = create_app({"TESTING": True}, predictor=FakePredictor(fail=RuntimeError("secret internal detail")))
    response = app.test_client().post("/predict", data=png_bytes(), content_type="image/png")
    message = assert_error(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True) and "secret" not in message
    assert "secret internal detail" in caplog.text  # but the operator can find it


def test_an_expected_error_inside_the_pipeline_keeps_its_code_and_status():
    # A FaceEmotionError's code is mapped to a status in one place (server.errors.STATUS_BY_CODE).
    from face_emotion.errors import FaceEmotionError

    app = create_app({"TESTING": True}, predictor=FakePredictor(fail=FaceEmotionError("no way", code="bad_parameter")))
    response = app.test_client().post("/predict?explain=1", data=png_bytes(), content_type="image/png")
    assert "no way" in assert_error(response, 400, "bad_parameter")
    failing = FakePredictor(fail=FaceEmotionError("gone", code="model_unavailable"))
    app = create_app({"TESTING": True}, predictor=failing)
    response = app.test_client().post("/predict", data=png_bytes(), content_type="image/png")
    assert "gone" in assert_error(response, 503, "model_unavailable")


# ---- POST /predict/batch -----------------------------------------------------------------

def test_batch_answers_each_item_in_order_with_its_own_errors(client):
    data = {"images": [
        (io.BytesIO(png_bytes((10, 10))), "a.png"),
        (io.BytesIO(b"not an image"), "b.txt"),
        (io.BytesIO(png_bytes((30, 20))), "c.png"),
    ]}
    response = client.post("/predict/batch", data=data)
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"] == "fake-model" and body["elapsed_ms"] >= 0
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["filename"] for r in results] == ["a.png", "b.txt", "c.png"]
    # One shape for every item, as ImageResult.to_dict() gives it: an error is {code, message}.
    assert all(set(r) == {"index", "filename", "emotion", "confidence", "faces", "image", "error"} for r in results)
    assert results[0]["image"] == {"width": 10, "height": 10} and results[0]["error"] is None
    assert results[1]["error"] == {"code": "invalid_image", "message": "not a recognised image format"}
    assert results[1]["faces"] == [] and results[1]["image"] is None and results[1]["emotion"] is None
    assert results[2]["image"] == {"width": 30, "height": 20}
    item = app_schemas(client)["BatchPrediction"]["properties"]["results"]["items"]
    assert set(results[1]) == set(item["properties"]) == set(item["required"])


def app_schemas(client) -> dict:
    return client.get("/openapi.json").get_json()["components"]["schemas"]


def test_batch_over_the_cap_is_413(client, fake):
    data = {"images": [(io.BytesIO(png_bytes()), f"{i}.png") for i in range(4)]}
    assert "limit is 3" in assert_error(client.post("/predict/batch", data=data), 413, "too_many_images")
    assert fake.calls == []


def test_batch_without_files_or_multipart(client):
    assert_error(client.post("/predict/batch", data={"x": "y"}, content_type="multipart/form-data"), 400, "no_image")
    message = assert_error(client.post("/predict/batch", data=png_bytes(), content_type="image/png"),
                           415, "unsupported_media_type")
    assert "'images'" in message


def test_batch_oversize_image_is_an_item_error(client):
    data = {"images": [(io.BytesIO(png_bytes((1001, 1000))), "huge.png"), (io.BytesIO(png_bytes()), "ok.png")]}
    results = client.post("/predict/batch", data=data).get_json()["results"]
    assert results[0]["error"]["code"] == "image_too_large"
    assert results[1]["emotion"] == "happiness"


# ---- GET endpoints -----------------------------------------------------------------------

def test_health(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["model"] == "fake-model"
    assert body["backend"] == "fake" and body["detector"] == "fake-detector"


def test_model_describes_itself(client):
    body = client.get("/model").get_json()
    assert body["classes"] == list(CLASSES)
    assert body["architecture"] == "resnet18" and body["image_size"] == 32
    assert body["metrics"] == {"accuracy": 0.5} and body["version"] == "9.9" and body["name"] == "fake-model"


def test_openapi_documents_every_api_route_and_matches_the_result_objects(app, client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    api_rules = {r.rule for r in app.url_map.iter_rules() if r.endpoint.startswith("api.")}
    assert api_rules == set(spec["paths"])
    assert set(spec["paths"]["/predict"]) == {"post"}
    schemas = spec["components"]["schemas"]
    face = FakePredictor().predict(Image.new("RGB", (8, 8)), explain=True)[0].to_dict()
    assert set(face) == set(schemas["Face"]["properties"])
    assert set(schemas["Face"]["required"]) == set(face) - {"heatmap_png"}
    assert set(face["box"]) == set(schemas["Box"]["properties"])
    prediction = client.post("/predict", data=png_bytes(), content_type="image/png").get_json()
    assert set(prediction) == set(schemas["Prediction"]["properties"]) == set(schemas["Prediction"]["required"])
    assert set(client.get("/health").get_json()) == set(schemas["Health"]["properties"])
    assert set(client.get("/model").get_json()) == set(schemas["ModelInfo"]["properties"])
    # every $ref resolves
    text = client.get("/openapi.json").get_data(as_text=True)
    for kind, name in re.findall(r'"#/components/(\w+)/(\w+)"', text):
        assert name in spec["components"][kind], (kind, name)


def test_docs_page_renders_the_spec_without_a_cdn(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for path in ("/predict", "/predict/batch", "/health", "/model", "/openapi.json"):
        assert f"<code>{path}</code>" in html
    assert "Prediction" in html and "heatmap_png" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)


def test_index_page_and_static_files(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "fake-model" in html and "happiness" in html
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert client.get(asset).status_code == 200, asset


def test_page_needs_no_inline_script_style_or_other_origin():
    """What the CSP (script-src/style-src 'self') would block must not be in the files at all."""
    # static/vendor holds onnxruntime-web as npm ships it (loaded from this origin, not our code).
    for path in [*SERVER_DIR.joinpath("templates").iterdir(), *SERVER_DIR.joinpath("static").iterdir()]:
        if not path.is_file():
            continue
        text = path.read_text()
        assert not re.search(r"""https?://(?!www\.w3\.org/2000/svg)""", text), path
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"inline script in {path}"
            assert not re.search(r"<style", text), f"inline style element in {path}"
            assert not re.search(r"\sstyle=", text), f"style attribute in {path}"
            assert not re.search(r"\son[a-z]+=", text), f"inline event handler in {path}"
        if path.suffix == ".js":
            assert "setAttribute(\"style\"" not in text and "innerHTML" not in text and "eval(" not in text


# ---- headers -------------------------------------------------------------------------------

def test_security_headers_on_pages_api_and_errors(client):
    for response in (client.get("/"), client.get("/health"), client.get("/missing")):
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert client.get("/health").headers["Cache-Control"] == "no-store"


def test_same_origin_only_by_default(client):
    response = client.get("/health", headers={"Origin": "https://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_configured_cors_origin_is_allowed_and_preflight_answers(fake):
    app = create_app({"cors_origins": "https://app.example, http://localhost:3000"}, predictor=fake)
    client = app.test_client()
    response = client.get("/health", headers={"Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Origin" not in client.get("/health", headers={"Origin": "https://evil.example"}).headers
    preflight = client.options("/predict", headers={"Origin": "http://localhost:3000",
                                                    "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


# ---- uploads stay in memory -------------------------------------------------------------

def test_uploads_are_never_written_to_disk(client, monkeypatch):
    import tempfile

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    import werkzeug.formparser as formparser

    monkeypatch.setattr(formparser, "SpooledTemporaryFile", no_disk, raising=False)
    noise = np.random.default_rng(0).integers(0, 255, (420, 420, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert buffer.tell() > 500_000  # above the size at which Werkzeug would spill to disk
    response = client.post("/predict", data={"image": (io.BytesIO(buffer.getvalue()), "noise.png")})
    assert response.status_code == 200, response.get_json()


# ---- configuration -------------------------------------------------------------------------

def test_config_from_environment_and_flags():
    env = {"FACE_EMOTION_MAX_UPLOAD_MB": "2.5", "FACE_EMOTION_MAX_PIXELS": "1000", "FACE_EMOTION_TTA": "yes",
           "FACE_EMOTION_CORS_ORIGINS": "https://a.example,https://b.example/", "FACE_EMOTION_MODEL": "/m"}
    config = ServerConfig.from_env(env, max_pixels=5000, model=None)
    assert config.max_upload_mb == 2.5 and config.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert config.max_pixels == 5000  # the flag wins
    assert config.model == "/m"  # a flag left unset does not erase the environment
    assert config.tta is True
    assert config.cors_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize("env, fragment", [
    ({"FACE_EMOTION_MAX_UPLOAD_MB": "lots"}, "FACE_EMOTION_MAX_UPLOAD_MB must be a number"),
    ({"FACE_EMOTION_MAX_UPLOAD_MB": "0"}, "FACE_EMOTION_MAX_UPLOAD_MB"),
    ({"FACE_EMOTION_MAX_PIXELS": "-1"}, "FACE_EMOTION_MAX_PIXELS"),
    ({"FACE_EMOTION_MAX_BATCH": "1000"}, "FACE_EMOTION_MAX_BATCH"),
    ({"FACE_EMOTION_TTA": "perhaps"}, "FACE_EMOTION_TTA must be 1 or 0"),
    ({"FACE_EMOTION_CORS_ORIGINS": "not a url"}, "FACE_EMOTION_CORS_ORIGINS"),
])
def test_bad_settings_are_refused_with_the_variable_named(env, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        ServerConfig.from_env(env)


def test_unknown_setting_is_an_error_not_ignored(fake):
    with pytest.raises(ConfigError, match="max_uplod_mb"):
        create_app({"max_uplod_mb": 3}, predictor=fake)


def test_create_app_reads_no_environment(fake, monkeypatch):
    monkeypatch.setenv("FACE_EMOTION_MAX_UPLOAD_MB", "3")
    assert create_app(predictor=fake).config["MAX_CONTENT_LENGTH"] == 10 * 1024 * 1024


# ---- the serve command ---------------------------------------------------------------------

def test_serve_is_a_verb_with_help():
    from face_emotion.cli import main

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--host", "--port", "--workers", "--dev", "--max-upload-mb", "--cors-origins"):
        assert option in result.output


def test_serve_without_a_model_fails_cleanly(tmp_path):
    from face_emotion.cli import main

    result = CliRunner().invoke(main, ["serve", "--model", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "no model at" in result.output and "Traceback" not in result.output


def test_serve_rejects_bad_settings_before_starting(tiny_model_dir, monkeypatch):
    from face_emotion.cli import main

    monkeypatch.setenv("FACE_EMOTION_MAX_UPLOAD_MB", "-3")
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir)])
    assert result.exit_code == 1 and "FACE_EMOTION_MAX_UPLOAD_MB" in result.output
    monkeypatch.delenv("FACE_EMOTION_MAX_UPLOAD_MB")
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir), "--detector", "nope"])
    assert result.exit_code == 1 and "unknown face detector" in result.output


def test_serve_hands_gunicorn_the_settings(tiny_model_dir, monkeypatch):
    from face_emotion.cli import main
    from face_emotion.server import runner

    seen = {}
    monkeypatch.setattr(runner, "run_gunicorn", lambda config, options: seen.update(config=config, options=options))
    monkeypatch.setenv("FACE_EMOTION_MAX_BATCH", "5")
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir), "--port", "5123", "--workers", "2",
                                       "--max-upload-mb", "3"])
    assert result.exit_code == 0, result.output
    assert seen["options"].port == 5123 and seen["options"].workers == 2 and seen["options"].host == "127.0.0.1"
    assert seen["config"].max_upload_mb == 3 and seen["config"].max_batch == 5
    assert seen["config"].model == str(tiny_model_dir)
    assert seen["config"].inference_threads >= 1


# ---- the real Predictor on the tiny random model -----------------------------------------

@pytest.fixture(scope="module")
def real_app(tiny_model_dir):
    return create_app({"model": str(tiny_model_dir), "detector": "none", "TESTING": True})


def test_real_predictor_whole_image(real_app):
    client = real_app.test_client()
    body = client.post("/predict?explain=1", data=png_bytes((48, 40)), content_type="image/png").get_json()
    assert body["model"] == "tiny-test-model"
    (face,) = body["faces"]
    assert face["box"] == {"x": 0, "y": 0, "width": 48, "height": 40}
    assert set(face["probabilities"]) == set(CLASSES)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    heatmap = Image.open(io.BytesIO(base64.b64decode(face["heatmap_png"])))
    assert heatmap.size == (48, 40) and heatmap.mode == "L"
    info = client.get("/model").get_json()
    # Served through the ONNX form derived from the safetensors file; Grad-CAM still worked above.
    assert info["classes"] == list(CLASSES) and info["backend"] == "onnxruntime" and info["detector"] == "none"


def test_real_predictor_finds_the_astronauts_face(tiny_model_dir):
    skimage_data = pytest.importorskip("skimage.data")
    from face_emotion.faces import DetectorUnavailableError

    try:
        app = create_app({"model": str(tiny_model_dir)})
    except DetectorUnavailableError as error:
        pytest.skip(f"default face detector not installed: {error}")
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buffer, format="JPEG")
    body = app.test_client().post("/predict", data=buffer.getvalue(), content_type="image/jpeg").get_json()
    assert len(body["faces"]) == 1
    box = body["faces"][0]["box"]
    # The face is around x 180-270, y 60-180 in the 512x512 photo.
    assert 150 < box["x"] + box["width"] / 2 < 300 and 50 < box["y"] + box["height"] / 2 < 200
    assert body["emotion"] in CLASSES


def test_serve_options_pass_not_given_and_show_the_dataclass_defaults():
    """Defaults live in ServerConfig / RunOptions only: every option passes None when not given,
    and its help shows the dataclass's default, so the two cannot drift apart."""
    import dataclasses

    from face_emotion.commands.serve import serve
    from face_emotion.server.config import RunOptions

    fields = {f.name: (cls, f) for cls in (ServerConfig, RunOptions) for f in dataclasses.fields(cls)}
    options = [p for p in serve.params if p.name != "dev"]
    given_nothing = serve.make_context("serve", []).params
    assert {given_nothing[p.name] for p in options} == {None}
    for param in options:
        name = {"inference_timeout": "inference_timeout_s"}.get(param.name, param.name)
        cls, f = fields[name]
        assert cls.flag_name(name) in param.opts
        assert f"Env {cls.env_name(name)}." in param.help
        if f.default is not None and f.default != () and name != "inference_threads":
            shown = {True: "on", False: "off"}.get(f.default) if isinstance(f.default, bool) else f"{f.default:g}" \
                if isinstance(f.default, float) else str(f.default)
            assert f"[default: {shown}]" in param.help, (name, param.help)
    # Every setting with a flag has an option.
    flags = {opt for p in options for opt in p.opts}
    assert {cls.flag_name(n) for n, (cls, _) in fields.items() if cls.flag_name(n)} <= flags


def test_run_options_come_from_the_environment_with_the_variable_named_on_error(tiny_model_dir, monkeypatch):
    from face_emotion.cli import main
    from face_emotion.server import runner

    seen = {}
    monkeypatch.setattr(runner, "run_gunicorn", lambda config, options: seen.update(options=options))
    monkeypatch.setenv("FACE_EMOTION_PORT", "5124")
    monkeypatch.setenv("FACE_EMOTION_TIMEOUT", "40")
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir), "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert (seen["options"].port, seen["options"].timeout_s, seen["options"].threads) == (5124, 40, 2)
    monkeypatch.setenv("FACE_EMOTION_PORT", "70000")
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir)])
    assert result.exit_code == 1 and "--port / FACE_EMOTION_PORT" in result.output and "Traceback" not in result.output
