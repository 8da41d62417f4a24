"""One path from input to answer (inference.pipeline.analyse) and one error type, for every verb."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from face_emotion.cli import main
from face_emotion.errors import FaceEmotionError
from face_emotion.inference.pipeline import PREDICTION_FAILED, analyse
from support.fakes import FakePredictor


def png(size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_every_kind_of_input_gives_the_same_result(tmp_path):
    data = png()
    path = tmp_path / "a.png"
    path.write_bytes(data)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    predictor = FakePredictor()
    results = [analyse(predictor, source, path="a.png") for source in (data, path, image, np.asarray(image))]
    assert all(r.ok for r in results)
    assert len({repr({**r.to_dict(), "elapsed_ms": None}) for r in results}) == 1
    assert analyse(predictor, path).path == str(path)  # a path names its result by default


def test_a_result_says_which_model_answered_and_how_long_it_took():
    """ImageResult.to_dict() is what `predict --json` prints, model and elapsed_ms included."""
    result = analyse(FakePredictor(name="m1"), png())
    data = result.to_dict()
    assert (data["model"], result.model) == ("m1", "m1")
    assert isinstance(data["elapsed_ms"], float) and data["elapsed_ms"] >= 0
    assert analyse(FakePredictor(name="m1"), b"junk").to_dict()["model"] == "m1"  # failed results too


def test_bad_inputs_are_failed_results_with_codes(tmp_path):
    predictor = FakePredictor()
    assert analyse(predictor, b"not an image").error.code == "invalid_image"
    assert analyse(predictor, tmp_path).error.code == "unreadable_file"  # a folder
    assert analyse(predictor, tmp_path / "missing.png").error.code == "unreadable_file"
    assert analyse(predictor, png((100, 100)), max_pixels=50).error.code == "image_too_large"
    assert analyse(predictor, np.zeros((4, 4), np.uint8)).error.code == "invalid_image"
    assert predictor.calls == []  # the model never saw any of them


def test_an_unexpected_failure_is_one_result_not_an_exception(caplog):
    failed = analyse(FakePredictor(fail=RuntimeError("boom")), png(), path="x.png")
    assert failed.error.code == PREDICTION_FAILED and "RuntimeError: boom" in failed.error.message
    assert "boom" in caplog.text  # with its traceback, for whoever runs it
    coded = analyse(FakePredictor(fail=FaceEmotionError("no heatmaps here", code="bad_parameter")), png())
    assert coded.error.to_dict() == {"code": "bad_parameter", "message": "no heatmaps here"}


def test_errors_share_one_base_with_a_code():
    from face_emotion.faces.base import DetectorUnavailableError
    from face_emotion.imageio import ImageDecodeError, ImageTooLargeError
    from face_emotion.models.files import ModelLoadError
    from face_emotion.server.config import ConfigError
    from face_emotion.video.decode import VideoDecodeError

    for error_type, builtin in ((ModelLoadError, RuntimeError), (ImageDecodeError, ValueError),
                                (DetectorUnavailableError, ImportError), (ConfigError, ValueError),
                                (VideoDecodeError, ValueError)):
        error = error_type("what to do")
        assert isinstance(error, FaceEmotionError) and isinstance(error, builtin)  # old except clauses still work
        assert error.code != FaceEmotionError.code and error.message == str(error) == "what to do"
    assert ImageTooLargeError("x").code == "image_too_large"


def test_train_with_a_missing_init_file_is_one_line(tmp_path):
    pytest.importorskip("torch", reason="train needs the 'train' extra")
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(tmp_path / "run"),
                                       "--init", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --init ")
    assert "missing.safetensors: does not exist" in lines[0]
    assert "Traceback" not in result.output


def test_the_detector_factory_is_the_one_for_every_verb():
    from face_emotion.faces import WholeImageDetector, create_detector
    from face_emotion.inference.predictor import Predictor

    whole = create_detector("none", num_threads=2)  # a detector without threads ignores them
    assert isinstance(whole, WholeImageDetector)

    class Backend:
        name, path, spec = "fake", Path("x"), FakePredictor().spec

    # "none" means one thing: the image is the crop, whether given by name or as no detector.
    for detector in (whole, None):
        predictor = Predictor(Backend(), detector)
        assert predictor.whole_image and predictor.detector_name == "none"
        (crop,) = predictor.faces(Image.new("RGB", (30, 20)))
        assert crop.crop.size == (30, 20) and crop.box.to_dict() == {"x": 0, "y": 0, "width": 30, "height": 20}
