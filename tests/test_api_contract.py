"""The OpenAPI document is a contract: the server accepts what it describes, rejects what it does not
(with a 4xx, never a 500), and answers in the shapes it promises.

Schemathesis generates requests from /openapi.json against the Flask app (the real Predictor on the
tiny model), valid and invalid, with a short budget; the unit tests below pin what it found.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from face_emotion.server import create_app
from face_emotion.server.routes import FLAG_VALUES
from support.clips import crossing_faces_clip, default_detector_available
from support.fakes import FakePredictor
from support.images import solid_image_bytes
from support.server import multipart

schemathesis = pytest.importorskip("schemathesis")

MAX_BATCH = 3


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    detector = "centerface" if default_detector_available() else "none"
    return create_app({"model": str(tiny_model_dir), "detector": detector, "max_batch": MAX_BATCH,
                       "max_upload_mb": 2, "max_video_mb": 2, "TESTING": True})


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def _schema_of(app):
    config = schemathesis.Config.from_dict({
        "seed": 24,  # the same cases on every run: a contract test, not a lottery
        "generation": {"mode": "all", "max-examples": 200},
        # 413 is how the server refuses a batch over FACE_EMOTION_MAX_BATCH (the schema's maxItems):
        # a rejection, as 400 is.
        "checks": {"negative_data_rejection": {"expected-statuses": ["400", "404", "405", "406", "413", "415",
                                                                     "422"]}},
    })
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)


@pytest.fixture(scope="module")
def api_schema(app):
    return _schema_of(app)


# The generated tests need their schema when pytest collects them; schemathesis' lazy loader
# (from_fixture) reads a node attribute that pytest 9 no longer has. So the fuzzed app is built at
# import, with the instant FakePredictor: the HTTP layer is what the fuzzing probes, and
# test_real_answers_match_their_schemas checks the real Predictor's answers against the same document.
fuzzed = _schema_of(create_app({"TESTING": True, "max_batch": MAX_BATCH, "max_upload_mb": 2, "max_video_mb": 2},
                               predictor=FakePredictor()))


@pytest.mark.slow
@fuzzed.parametrize()
def test_the_server_keeps_its_openapi_contract(case):
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance, negative_data_rejection])


def _validated(api_schema, path: str, **case):
    """A hand-made request checked against the document: real answers (a face, a clip) are rare in
    generated data, so the 200 shapes are checked here too."""
    from schemathesis.specs.openapi.checks import response_schema_conformance

    response = api_schema[path]["POST"].Case(**case).call_and_validate(checks=[response_schema_conformance])
    assert response.status_code == 200, response.text
    return response.json()


def test_real_answers_match_their_schemas(api_schema, tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buffer, "JPEG")
    photo = buffer.getvalue()
    body = _validated(api_schema, "/predict", body={"image": photo}, media_type="multipart/form-data",
                      query={"explain": "1"})
    assert body["faces"] and body["faces"][0]["heatmap_png"]
    _validated(api_schema, "/predict", body=photo, media_type="application/octet-stream")
    batch = _validated(api_schema, "/predict/batch", body={"images": [photo, b""]}, media_type="multipart/form-data")
    assert batch["results"][0]["error"] is None and batch["results"][1]["error"]["code"] == "no_image"
    clip = crossing_faces_clip(tmp_path / "clip.mp4").read_bytes()
    video = _validated(api_schema, "/predict/video", body={"video": clip}, media_type="multipart/form-data")
    assert video["frames"]


# ------------------------------------------------------------- what the fuzzing found, pinned

def _unnamed_part_body() -> tuple[bytes, str]:
    """A multipart body whose first part has no name: Werkzeug files it under None."""
    boundary = "contract-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; filename=\"a.png\"\r\n\r\nabc\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--{boundary}--\r\n")
    return body.encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(("path", "code"), [("/predict", "no_image"), ("/predict/video", "no_video"),
                                            ("/predict/batch", "no_image")])
def test_a_part_without_a_name_is_a_400_not_a_500(client, path, code):
    body, content_type = _unnamed_part_body()
    response = client.post(path, data=body, content_type=content_type)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code
    if path != "/predict/batch":
        assert "(unnamed)" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("value", FLAG_VALUES)
def test_every_flag_value_the_document_lists_is_accepted(client, value):
    png = solid_image_bytes((24, 20))
    response = client.post(f"/predict?detect={value}&explain=0", data=png, content_type="image/png")
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("query", ["explain=", "explain=TRUE", "explain=2", "explain=%201", "explain=maybe",
                                   "explain=1&explain=1", "detect=", "detect=-1", "detect=Yes"])
def test_a_flag_value_the_document_does_not_list_is_a_400(client, query):
    png = solid_image_bytes((24, 20))
    response = client.post(f"/predict?{query}", data=png, content_type="image/png")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "bad_parameter"
    batch = client.post(f"/predict/batch?{query}", data={"images": [(io.BytesIO(png), "a.png")]})
    assert batch.status_code == 400


@pytest.mark.parametrize("query", ["smooth=", "smooth=1_0", "sample_fps=inf", "sample_fps=5&sample_fps=6"])
def test_a_number_the_document_does_not_allow_is_a_400(client, query):
    body, content_type = multipart([("video", "clip.mp4", b"not a clip")])
    response = client.post(f"/predict/video?{query}", data=body, content_type=content_type)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_parameter"


def test_one_image_or_clip_per_request(client):
    png = solid_image_bytes((24, 20))
    body, content_type = multipart([("image", "a.png", png), ("image", "b.png", png)])
    response = client.post("/predict", data=body, content_type=content_type)
    assert response.status_code == 400 and "/predict/batch" in response.get_json()["error"]["message"]
    body, content_type = multipart([("video", "a.mp4", b"1"), ("video", "b.mp4", b"2")])
    response = client.post("/predict/video", data=body, content_type=content_type)
    assert response.status_code == 400 and "one clip" in response.get_json()["error"]["message"]


def test_the_document_says_what_the_server_rejects(client):
    spec = client.get("/openapi.json").get_json()
    schemas, paths = spec["components"]["schemas"], spec["paths"]
    predict = paths["/predict"]["post"]["requestBody"]
    assert predict["required"] is True
    assert set(predict["content"]) == {"multipart/form-data", "image/*", "application/octet-stream"}
    assert schemas["ImageUpload"]["required"] == ["image"] and schemas["ImageUpload"]["properties"]["image"][
        "minLength"] == 1
    assert "image/jpeg" in predict["content"]["multipart/form-data"]["encoding"]["image"]["contentType"]
    images = schemas["BatchUpload"]["properties"]["images"]
    assert schemas["BatchUpload"]["required"] == ["images"]
    assert (images["minItems"], images["maxItems"]) == (1, MAX_BATCH)
    video = paths["/predict/video"]["post"]["requestBody"]
    assert schemas["VideoUpload"]["required"] == ["video"]
    assert "video/mp4" in video["content"]["multipart/form-data"]["encoding"]["video"]["contentType"]
    explain = spec["components"]["parameters"]["explain"]
    assert explain["in"] == "query" and explain["schema"]["enum"] == list(FLAG_VALUES)
    # The /docs page reads the parameters through their $ref.
    html = client.get("/docs").get_data(as_text=True)
    assert "<code>explain</code>" in html and "<code>detect</code>" in html
    assert "more than one <code>image</code> field 400" in html  # what the body must be, on the page too
