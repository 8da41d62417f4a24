"""The Python API: `from face_emotion import FaceEmotion`, the same answers as the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from face_emotion import FaceEmotion, FaceEmotionError
from face_emotion.cli import main


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return FaceEmotion(tiny_model_dir, detector="none", num_threads=1)


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_one_import_predicts_paths_bytes_images_and_arrays(model, photo):
    image = Image.open(photo).convert("RGB")
    results = [model.predict(photo), model.predict(photo.read_bytes()), model.predict(image),
               model(np.asarray(image))]
    assert all(r.ok and len(r.faces) == 1 for r in results)
    faces = [r.faces[0] for r in results]
    assert len({json.dumps(f.to_dict()) for f in faces}) == 1
    assert results[0].emotion in model.classes and results[0].path == str(photo)
    assert model.classes == ("anger", "happiness", "sadness") and "onnxruntime" in repr(model)


def test_the_result_is_what_the_cli_prints(model, photo, tiny_model_dir):
    line = CliRunner().invoke(main, ["predict", str(photo), "--model", str(tiny_model_dir), "--no-detect", "--json",
                                     "--threads", "1"]).stdout
    from_cli = json.loads(line)
    ours = model.predict(photo, detect=False).to_dict(include_heatmap=False)
    assert from_cli["model"] == ours["model"] == "tiny-test-model"  # model and elapsed_ms included
    assert isinstance(ours["elapsed_ms"], float)
    assert list(ours) == list(from_cli)
    assert {**ours, "elapsed_ms": 0} == {**from_cli, "elapsed_ms": 0}


def test_bad_input_is_a_failed_result_and_a_missing_model_raises(model, tmp_path):
    bad = model.predict(b"not an image")
    assert not bad.ok and bad.error.code == "invalid_image" and bad.faces == ()
    assert [r.ok for r in model.predict_many([b"nope", Image.new("RGB", (20, 20))])] == [False, True]
    with pytest.raises(FaceEmotionError, match="no model at"):
        FaceEmotion(tmp_path / "nowhere")


def test_heatmaps_through_the_api(model):
    (face,) = model.predict(Image.new("RGB", (24, 24), (90, 120, 150)), explain=True).faces
    assert Image.open(io.BytesIO(face.heatmap_png)).size == (24, 24)


@pytest.mark.slow
def test_a_clip_gives_frames_and_a_summary(model, tmp_path):
    from support.clips import moving_face_clip

    clip, _ = moving_face_clip(tmp_path / "clip.mp4", count=10)
    analysis = model.predict(clip)
    assert len(analysis.frames) == 10 and analysis.summary.frames_analysed == 10
    assert all(frame.faces[0].track_id == 1 for frame in analysis.frames)
