"""`face-emotion evaluate`, in process: one JSON object, shared classes only, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from face_emotion.cli import main
from face_emotion.data.scan import scan_dataset
from face_emotion.imageio import load_image
from face_emotion.models.store import load_model
from face_emotion.transforms import eval_transform
from support import odd_images as odd
from support.models import TINY_CLASSES

METRICS_KEYS = {"accuracy", "macro_f1", "per_class", "confusion_matrix", "classes", "ece"}
MODEL_CLASSES = TINY_CLASSES




@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> odd.OddDataset:
    return odd.make_odd_dataset(tmp_path_factory.mktemp("evaluate") / "odd")


def evaluate(*args: str):
    return CliRunner().invoke(main, ["evaluate", *map(str, args)])


def only_json_object(text: str) -> dict:
    """The whole of ``text`` is one JSON object (and nothing else)."""
    decoder = json.JSONDecoder()
    stripped = text.strip()
    value, end = decoder.raw_decode(stripped)
    assert end == len(stripped), f"more than one JSON value on stdout: {stripped[end:end + 200]!r}"
    assert isinstance(value, dict)
    return value


def manual_predictions(model_dir: Path, data_root: Path, shared: list[str]) -> tuple[list[int], list[int]]:
    """What evaluate should compute, done by hand: eval transform, model, argmax over shared columns."""
    network, spec = load_model(model_dir)
    transform = eval_transform(spec.preprocess)
    columns = [spec.classes.index(c) for c in shared]
    predicted, truth = [], []
    for sample in scan_dataset(data_root).samples:
        if sample.label not in shared:
            continue
        with torch.inference_mode():
            logits = network(torch.from_numpy(transform(load_image(sample.path)))[None])[0, columns]
        predicted.append(int(logits.argmax()))
        truth.append(shared.index(sample.label))
    return predicted, truth


def test_json_is_exactly_one_object_with_metrics_and_what_was_skipped(tiny_model_dir, odd_data):
    result = evaluate(odd_data.root, "--model", tiny_model_dir, "--no-detect", "--json")
    assert result.exit_code == 0, result.output
    report = only_json_object(result.stdout)
    assert METRICS_KEYS | {"n_images", "skipped"} <= report.keys()
    # Aliases ("Happy", "angry", "SAD") meet the model's canonical names; order is the model's.
    assert report["classes"] == list(MODEL_CLASSES)
    per_class = odd_data.per_class()
    assert report["n_images"] == sum(per_class[c] for c in MODEL_CLASSES)
    assert {c: report["per_class"][c]["support"] for c in MODEL_CLASSES} == {c: per_class[c] for c in MODEL_CLASSES}
    assert len(report["confusion_matrix"]) == 3 and sum(map(sum, report["confusion_matrix"])) == report["n_images"]
    # Folders the model does not know are listed, with their image counts.
    assert report["skipped_classes"] == {
        "pain": {"images": per_class["pain"], "reason": "class not known to the model"},
        "surprise": {"images": per_class["surprise"], "reason": "class not known to the model"},
    }
    skipped = {item["path"]: item["reason"] for item in report["skipped"]}
    for path in odd_data.corrupt + odd_data.not_images + odd_data.cross_class:
        assert skipped.get(str(path)), path
    assert "truncated" in skipped[str(odd_data.root / "Happy" / "truncated.jpg")]


def test_scores_are_those_of_the_model_on_the_shared_classes(tiny_model_dir, odd_data, tmp_path):
    # Keep two of the model's three classes: its probabilities are renormalised over those two.
    data = tmp_path / "two"
    shutil.copytree(odd_data.root / "angry", data / "ANGER")
    shutil.copytree(odd_data.root / "SAD", data / "sad")
    result = evaluate(data, "--model", tiny_model_dir, "--no-detect", "--json")
    assert result.exit_code == 0, result.output
    report = only_json_object(result.stdout)
    assert report["classes"] == ["anger", "sadness"]
    assert report["skipped_classes"] == {}
    predicted, truth = manual_predictions(tiny_model_dir, data, ["anger", "sadness"])
    assert report["n_images"] == len(truth)
    expected_matrix = [[sum(1 for p, t in zip(predicted, truth) if t == i and p == j) for j in range(2)]
                       for i in range(2)]
    assert report["confusion_matrix"] == expected_matrix
    assert report["accuracy"] == pytest.approx(sum(p == t for p, t in zip(predicted, truth)) / len(truth))
    # Scoring over fewer classes than the model knows is said, in the JSON and in the text.
    assert report["model_classes"] == list(MODEL_CLASSES) and report["unscored_model_classes"] == ["happiness"]
    text = evaluate(data, "--model", tiny_model_dir, "--no-detect")
    assert text.exit_code == 0, text.output
    assert "2 of the model's 3 classes" in text.stdout and "no images of happiness" in text.stdout


def test_only_the_test_folder_of_a_split_dataset_is_scored(tiny_model_dir, tmp_path):
    seeds = iter(range(500, 600))
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        for folder in ("happy", "angry"):
            for i in range(n):
                path = tmp_path / "data" / split / folder / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(odd.noise_png(next(seeds)))
    result = evaluate(tmp_path / "data", "--model", tiny_model_dir, "--no-detect", "--json")
    assert result.exit_code == 0, result.output
    report = only_json_object(result.stdout)
    assert report["n_images"] == 6
    assert report["classes"] == ["anger", "happiness"]


def test_human_readable_output_lists_scores_and_skips(tiny_model_dir, odd_data):
    result = evaluate(odd_data.root, "--model", tiny_model_dir, "--no-detect")
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "macro-F1" in result.stdout
    assert "skipped class pain" in result.stderr and "skipped class surprise" in result.stderr
    assert str(odd_data.root / "angry" / "not_really.jpg") in result.stderr


def assert_clean_failure(result, *words: str) -> None:
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


def test_a_missing_model_is_a_clear_error(odd_data, tmp_path, monkeypatch):
    assert_clean_failure(evaluate(odd_data.root, "--model", tmp_path / "no-such-run", "--no-detect", "--json"),
                         "no model at")
    # Without --model the bundled default is used; an installation without one says so.
    import face_emotion.models.files as bundled

    monkeypatch.setattr(bundled, "BUNDLED_MODEL_DIR", tmp_path / "no-bundled-model")
    assert_clean_failure(evaluate(odd_data.root, "--no-detect"), "no bundled default model")


def test_a_damaged_model_is_a_clear_error(tiny_model_dir, odd_data, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    assert_clean_failure(evaluate(odd_data.root, "--model", broken, "--no-detect", "--json"), "Error")


def test_no_class_in_common_is_a_clear_error(tiny_model_dir, odd_data, tmp_path):
    data = tmp_path / "other"
    shutil.copytree(odd_data.root / "pain", data / "pain")
    shutil.copytree(odd_data.root / "Surprised", data / "Surprised")
    assert_clean_failure(evaluate(data, "--model", tiny_model_dir, "--no-detect", "--json"), "no class in common")


def test_a_folder_without_images_is_a_clear_error(tiny_model_dir, tmp_path):
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    assert_clean_failure(evaluate(tmp_path / "empty", "--model", tiny_model_dir, "--no-detect"), "no usable images")


def test_with_detection_faceless_images_count_as_wrong_and_are_listed(tiny_model_dir, tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    face_photo = Image.fromarray(skimage_data.astronaut())
    no_face = Image.fromarray(skimage_data.coffee())
    folders = (("happy", [face_photo, face_photo.rotate(3)]), ("sad", [face_photo.resize((300, 300)), no_face]))
    for folder, images in folders:
        (tmp_path / "photos" / folder).mkdir(parents=True)
        for i, image in enumerate(images):
            image.save(tmp_path / "photos" / folder / f"{i}.jpg")
    result = evaluate(tmp_path / "photos", "--model", tiny_model_dir, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    # The faceless photo stays in the denominator as a wrong answer (peers are scored that way).
    assert metrics["n_images"] == 4 and metrics["n"] == 4
    assert metrics["no_face"]["images"] == 1
    assert [Path(item["path"]).name for item in metrics["no_face"]["files"]] == ["1.jpg"]
    assert metrics["confusion_columns"][-1] == "(no face)"
    sad = metrics["classes"].index("sadness")
    assert metrics["confusion_matrix"][sad][-1] == 1
    assert sum(map(sum, metrics["confusion_matrix"])) == 4
    assert metrics["per_class"]["sadness"]["recall"] <= 0.5
    text = evaluate(tmp_path / "photos", "--model", tiny_model_dir)
    assert "no face found in 1 (counted as wrong)" in text.stdout and "4 images" in text.stdout


def test_an_onnx_model_is_scored_by_the_same_path_with_the_same_answers(tiny_model_dir, odd_data, tmp_path):
    from face_emotion.inference.export import export_onnx

    onnx_path = tmp_path / "model.onnx"
    export_onnx(tiny_model_dir, onnx_path, check_samples=2)
    by_torch = only_json_object(evaluate(odd_data.root, "--model", tiny_model_dir, "--no-detect", "--json").stdout)
    result = evaluate(odd_data.root, "--model", onnx_path, "--no-detect", "--json")
    assert result.exit_code == 0, result.output
    by_onnx = only_json_object(result.stdout)
    assert by_onnx["n"] == by_torch["n"] > 0
    assert by_onnx["confusion_matrix"] == by_torch["confusion_matrix"]
    assert by_onnx["accuracy"] == pytest.approx(by_torch["accuracy"])
