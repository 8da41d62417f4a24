"""Settings and wordings that had several homes now have one: the page's security policy (server
header and static site), the on/off words (settings and query flags), "cannot read file"."""

from __future__ import annotations

import re

import pytest

from face_emotion.errors import UnreadableFileError
from face_emotion.server import create_app
from face_emotion.server.config import FALSE_WORDS, TRUE_WORDS, ConfigError, ServerConfig
from support.fakes import FakePredictor
from support.images import solid_image_bytes


def test_the_static_site_carries_the_servers_policy():
    from face_emotion.server.web_export import _render_page

    header = create_app({}, predictor=FakePredictor()).test_client().get("/").headers["Content-Security-Policy"]
    page = _render_page(FakePredictor().spec, ServerConfig())
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    meta = meta.replace("&#39;", "'")
    # A <meta> policy cannot say frame-ancestors (browsers ignore it there); all else is the same.
    assert meta + "; frame-ancestors 'none'" == header


@pytest.mark.parametrize("word", TRUE_WORDS + FALSE_WORDS)
def test_settings_and_query_flags_take_the_same_words(word):
    value = word in TRUE_WORDS
    assert ServerConfig.from_env({"FACE_EMOTION_TTA": word}).tta is value
    assert ServerConfig.from_env({"FACE_EMOTION_TTA": word.upper()}).tta is value  # variables: any case
    client = create_app({}, predictor=FakePredictor()).test_client()
    answer = client.post(f"/predict?detect={word}", data=solid_image_bytes((40, 30)), content_type="image/png")
    assert answer.status_code == 200
    assert len(answer.get_json()["faces"]) == (2 if value else 1)


def test_other_words_are_refused_by_both():
    with pytest.raises(ConfigError):
        ServerConfig.from_env({"FACE_EMOTION_TTA": "maybe"})
    client = create_app({}, predictor=FakePredictor()).test_client()
    answer = client.post("/predict?detect=maybe", data=solid_image_bytes((40, 30)), content_type="image/png")
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "bad_parameter"
    assert ServerConfig.from_env({"FACE_EMOTION_TTA": ""}).tta is False  # a variable set to nothing: off


def test_an_unreadable_file_is_worded_once(tmp_path):
    from face_emotion.batch.rows import read_file
    from face_emotion.data.scan import _check
    from face_emotion.inference.pipeline import analyse

    missing = tmp_path / "gone.jpg"
    want = UnreadableFileError.of(FileNotFoundError(2, "No such file or directory")).message
    assert want == "cannot read file: No such file or directory"
    assert analyse(FakePredictor(), missing).error.message == want
    assert read_file(str(missing)) == (None, want)
    assert _check(missing, None, False) == (None, want)
