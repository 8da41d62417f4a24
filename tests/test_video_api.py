"""POST /predict/video through the Flask app with a real Predictor (tiny model, default detector)."""

from __future__ import annotations

import io

import pytest

from support.clips import astronaut_face, audio_only_file, crossing_faces_clip, default_detector_available

pytest.importorskip("av")

from face_emotion.server import create_app  # noqa: E402

pytestmark = pytest.mark.skipif(not default_detector_available(),
                                reason="the default face detector is not installed")


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-clips")
    return {"crossing": crossing_faces_clip(root / "crossing.mp4").read_bytes(),
            "audio": audio_only_file(root / "audio.mp4").read_bytes()}


def client_for(predictor, **settings):
    # A small image limit: clips must get their own, larger one.
    return create_app({"max_upload_mb": 0.01, **settings}, predictor=predictor).test_client()


def post(client, data: bytes | None, field="video", query=""):
    form = {} if data is None else {field: (io.BytesIO(data), "clip.mp4")}
    return client.post("/predict/video" + query, data=form, content_type="multipart/form-data")


def test_a_clip_gives_tracks_and_a_timeline(predictor, clip_bytes):
    client = client_for(predictor)
    assert len(clip_bytes["crossing"]) > 0.01 * 1024 * 1024  # over the image limit, under the clip limit
    response = post(client, clip_bytes["crossing"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["sample_fps"] == 5.0 and body["smooth_s"] == 0.5
    frames = body["frames"]
    assert len(frames) == 15  # 3 s at the server's default 5 frames a second
    assert [round(f["time_s"], 2) for f in frames[:3]] == [0.0, 0.2, 0.4]
    tracks = body["summary"]["tracks"]
    assert [t["track_id"] for t in tracks] == [1, 2] and all(t["frames"] >= 13 for t in tracks)
    assert body["summary"]["video"]["width"] == 480
    face = frames[5]["faces"][0]
    assert set(face) == {"track_id", "box", "score", "emotion", "confidence", "probabilities"}
    # Every face is numbered from its first frame on: no null track_id, not even on frame 0.
    assert frames[0]["faces"] and all(f["track_id"] in (1, 2) for frame in frames for f in frame["faces"])
    # The same bytes as an image upload are over the image limit: that limit is unchanged.
    image_response = client.post("/predict", data=clip_bytes["crossing"], content_type="image/jpeg")
    assert image_response.status_code == 413


def test_query_parameters(predictor, clip_bytes):
    client = client_for(predictor)
    body = post(client, clip_bytes["crossing"], query="?sample_fps=25&smooth=0").get_json()
    assert len(body["frames"]) == 75 and body["smooth_s"] == 0
    bad = post(client, clip_bytes["crossing"], query="?sample_fps=abc")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_parameter"


def _png() -> bytes:
    buffer = io.BytesIO()
    astronaut_face().save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case, status, code", [
    ("no_field", 400, "no_video"),
    ("empty", 400, "no_video"),
    ("image_named_mp4", 400, "invalid_video"),
    ("truncated", 400, "invalid_video"),
    ("corrupt", 400, "invalid_video"),
    ("audio_only", 400, "no_video_stream"),
])
def test_bad_clips_get_json_4xx(predictor, clip_bytes, case, status, code):
    client = client_for(predictor)
    data = {"no_field": None, "empty": b"", "image_named_mp4": _png(),
            "truncated": clip_bytes["crossing"][: len(clip_bytes["crossing"]) // 2],
            "corrupt": clip_bytes["crossing"][:40] + b"\x00" * 4000,
            "audio_only": clip_bytes["audio"]}[case]
    response = post(client, data) if case != "no_field" else post(client, b"x", field="image")
    assert response.status_code == status
    assert response.is_json and response.get_json()["error"]["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)
    # The service is still up and answers the next clip.
    assert post(client, clip_bytes["crossing"], query="?sample_fps=1").status_code == 200


def test_not_multipart_is_415(predictor, clip_bytes):
    response = client_for(predictor).post("/predict/video", data=clip_bytes["crossing"], content_type="video/mp4")
    assert response.status_code == 415 and response.get_json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("settings, code", [
    ({"max_video_mb": 0.01}, "video_too_large"),
    ({"max_video_s": 1.0}, "video_too_long"),
    ({"max_video_pixels": 320 * 240}, "video_resolution_too_large"),
])
def test_limits_are_checked_before_any_frame_is_decoded(predictor, clip_bytes, monkeypatch, settings, code):
    from face_emotion.video.decode import VideoSource

    decoded = []
    original = VideoSource.frames
    monkeypatch.setattr(VideoSource, "frames", lambda self: decoded.append(1) or original(self))
    response = post(client_for(predictor, **settings), clip_bytes["crossing"])
    assert response.status_code == 413 and response.get_json()["error"]["code"] in (code, "payload_too_large")
    assert decoded == []


def test_the_upload_never_reaches_the_disk(predictor, clip_bytes, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError("a temporary file was opened while serving a clip")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    real_open = open
    written = []

    def watch_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            written.append(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watch_open)
    assert post(client_for(predictor), clip_bytes["crossing"]).status_code == 200
    assert written == []


def test_the_route_is_in_the_openapi_document(predictor):
    spec = client_for(predictor).get("/openapi.json").get_json()
    operation = spec["paths"]["/predict/video"]["post"]
    upload = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert spec["components"]["schemas"][upload]["required"] == ["video"]
    assert "VideoPrediction" in spec["components"]["schemas"]
