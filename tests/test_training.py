"""Training end to end: it learns, writes a complete run folder, survives bad files, runs DDP on
CPU, resumes, refuses unavailable or unsafe weights and tampered model files."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from face_emotion.cli import main
from face_emotion.data.scan import read_split_csv
from face_emotion.evaluation.calibration import fit_temperature
from face_emotion.evaluation.evaluate import evaluate_folder
from face_emotion.evaluation.metrics import expected_calibration_error
from face_emotion.models.backbones import WeightsUnavailableError, create_network
from face_emotion.models.files import SPEC_METADATA_KEY, ModelLoadError
from face_emotion.models.spec import ModelSpec, PreprocessSpec
from face_emotion.models.store import load_model, read_spec
from face_emotion.training.config import TrainConfig
from face_emotion.training.run import run_training
from support import odd_images as odd
from support.models import make_tiny_model
from support.synthetic import make_learnable_dataset

RUN_FILES = ("model.safetensors", "model.json", "metrics.json", "confusion_matrix.png", "training_curves.png",
             "split.csv", "model_card.md", "skipped.csv", "checkpoints/last.ckpt", "logs/metrics.csv")
METRICS_KEYS = {"accuracy", "macro_f1", "per_class", "confusion_matrix", "classes", "ece"}
LEARNED_CLASSES = ["anger", "happiness", "sadness"]  # synthetic.PATTERNS folders: happy, Sad, angry




def tiny_config(data_dirs, out_dir, **changes) -> TrainConfig:
    values = dict(arch="resnet18", weights="none", image_size=32, epochs=1, batch_size=16, lr=1e-3,
                  augment="light", progress=False, seed=0, detect=False)
    values.update(changes)
    return TrainConfig(data_dirs=[str(d) for d in data_dirs], out_dir=str(out_dir), **values)


def split_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_complete_run_folder(out: Path, classes: list[str]) -> dict:
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for picture in ("confusion_matrix.png", "training_curves.png"):
        with Image.open(out / picture) as image:
            assert image.format == "PNG" and image.size[0] > 100
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRICS_KEYS <= metrics.keys()
    assert metrics["classes"] == classes
    assert set(metrics["per_class"]) == set(classes)
    for row in metrics["per_class"].values():
        assert {"precision", "recall", "f1", "support"} <= row.keys()
        assert all(0.0 <= row[k] <= 1.0 for k in ("precision", "recall", "f1"))
    matrix = metrics["confusion_matrix"]
    assert len(matrix) == len(classes) and all(len(r) == len(classes) for r in matrix)
    assert [sum(r) for r in matrix] == [metrics["per_class"][c]["support"] for c in classes]
    assert sum(map(sum, matrix)) == metrics["n"]
    assert abs(sum(matrix[i][i] for i in range(len(classes))) / metrics["n"] - metrics["accuracy"]) < 1e-6
    for key in ("val_ece_before", "val_ece_after", "test_ece_before", "test_ece_after", "temperature"):
        assert isinstance(metrics["calibration"][key], float)
    assert metrics["ece"] == metrics["calibration"]["test_ece_after"]
    assert "ece_before_temperature" in metrics
    # model.json is the same description the weights file carries, and it describes the run.
    spec = ModelSpec.from_dict(json.loads((out / "model.json").read_text()))
    assert spec == read_spec(out)
    assert list(spec.classes) == classes
    assert spec.temperature == pytest.approx(metrics["calibration"]["temperature"])
    assert spec.metrics["test"]["accuracy"] == pytest.approx(metrics["accuracy"])
    card = (out / "model_card.md").read_text()
    assert all(c in card for c in classes) and spec.architecture in card
    return metrics


# ---------------------------------------------------------------- (a) it learns


@pytest.fixture(scope="module")
def learned_run(learnable_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("learned") / "run"
    started = time.monotonic()
    result = run_training(tiny_config([learnable_dataset], out, epochs=6))
    seconds = time.monotonic() - started
    print(f"\nlearning run: {seconds:.1f} s, test accuracy {result.metrics['accuracy']:.3f}")
    return result


def test_training_learns_well_above_chance_on_unseen_images(learned_run):
    metrics = learned_run.metrics
    assert metrics["split"] == "test"
    assert metrics["n"] == 18  # 15 % of 40 images of each of 3 classes
    assert metrics["accuracy"] > 0.6, metrics  # chance is 1/3
    assert metrics["macro_f1"] > 0.5
    rows = split_rows(learned_run.out_dir / "split.csv")
    by_split = {name: {r["path"] for r in rows if r["split"] == name} for name in ("train", "val", "test")}
    assert len(rows) == 120 and [len(by_split[k]) for k in ("train", "val", "test")] == [84, 18, 18]
    assert not by_split["test"] & by_split["train"] and not by_split["test"] & by_split["val"]
    assert not by_split["train"] & by_split["val"]
    digests = {name: {r["sha256"] for r in rows if r["split"] == name} for name in ("train", "test")}
    assert not digests["train"] & digests["test"]


def test_learned_run_folder_is_complete_and_self_describing(learned_run):
    out = learned_run.out_dir
    assert_complete_run_folder(out, LEARNED_CLASSES)
    description = json.loads((out / "model.json").read_text())
    assert description["architecture"] == "resnet18"
    assert description["classes"] == LEARNED_CLASSES
    assert description["preprocess"]["image_size"] == 32
    assert description["preprocess"]["color_mode"] == "rgb"
    assert description["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert description["preprocess"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert description["temperature"] > 0
    assert description["data"]["n_images"] == 120
    assert description["data"]["per_class"] == {c: 40 for c in LEARNED_CLASSES}
    assert description["data"]["split_sizes"] == {"train": 84, "val": 18, "test": 18}
    assert description["training"]["epochs_run"] == 6 and description["training"]["weights"] == "none"
    assert {"test", "val", "calibration"} <= description["metrics"].keys()
    logged = split_rows(out / "logs" / "metrics.csv")
    assert sorted({int(r["epoch"]) for r in logged if r.get("val_loss")}) == list(range(6))


def test_saved_model_reproduces_the_test_metrics(learned_run, tmp_path, monkeypatch):
    out = learned_run.out_dir
    spec = read_spec(out)
    splits = read_split_csv(out / "split.csv", spec.data["roots"])
    test_only = tmp_path / "test_only"
    for sample in splits["test"]:
        target = test_only / sample.label / sample.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample.path, target)

    # Loading never unpickles: with pickle and torch.load unusable it still works.
    def refuse(*args, **kwargs):
        raise AssertionError("model loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    network, loaded_spec = load_model(out)
    assert loaded_spec == spec and not network.training
    scored = evaluate_folder(out, test_only)
    monkeypatch.undo()

    trained = learned_run.metrics
    assert scored["n_images"] == trained["n"] == 18
    assert scored["classes"] == trained["classes"]
    assert scored["confusion_matrix"] == trained["confusion_matrix"]
    assert scored["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)
    assert scored["macro_f1"] == pytest.approx(trained["macro_f1"], abs=1e-6)
    assert scored["ece"] == pytest.approx(trained["ece"], abs=1e-4)
    assert scored["ece_before_temperature"] == pytest.approx(trained["ece_before_temperature"], abs=1e-4)


def test_evaluating_on_the_models_own_training_images_is_counted(learned_run, learnable_dataset):
    scored = evaluate_folder(learned_run.out_dir, learnable_dataset)
    assert scored["n_images"] == 120 and scored["model_training_images"] == 84
    result = CliRunner().invoke(main, ["evaluate", str(learnable_dataset), "--model", str(learned_run.out_dir),
                                       "--no-detect"])
    assert result.exit_code == 0, result.output
    assert "84 of 120 images were in this model's training split" in result.output


def test_model_file_follows_the_umask_like_the_other_run_files(learned_run):
    out = learned_run.out_dir
    assert (out / "model.safetensors").stat().st_mode & 0o777 == (out / "model.json").stat().st_mode & 0o777


def test_temperature_is_kept_at_one_when_scaling_does_not_help_and_a_bound_is_reported():
    from face_emotion.evaluation.calibration import T_MAX, choose_temperature

    targets = torch.arange(60) % 3
    uniform = choose_temperature(torch.zeros(60, 3), targets)  # any T leaves uniform probabilities
    assert uniform["temperature"] == 1.0 and "kept T = 1" in uniform["note"]
    # Confidently wrong every time: NLL keeps falling as T grows, so the fit ends at its bound.
    wrong = torch.nn.functional.one_hot((targets + 1) % 3, 3).float() * 5.0
    bound = choose_temperature(wrong, targets)
    assert bound["temperature"] == T_MAX and "bound (20)" in bound["note"]


def test_init_copies_the_backbone_and_the_head_rows_of_known_classes(tmp_path):
    from face_emotion.models.transfer import init_from_model

    old_dir = make_tiny_model(tmp_path / "old", classes=("anger", "happiness", "sadness"))
    old, _ = load_model(old_dir)
    new = init_from_model(str(old_dir), "resnet18", ["happiness", "pain", "anger"], 0.2)
    old_state, new_state = old.state_dict(), new.state_dict()
    assert torch.equal(old_state["conv1.weight"], new_state["conv1.weight"])
    assert torch.equal(new_state["fc.1.weight"][0], old_state["fc.1.weight"][1])  # happiness
    assert torch.equal(new_state["fc.1.weight"][2], old_state["fc.1.weight"][0])  # anger
    assert not torch.equal(new_state["fc.1.weight"][1], old_state["fc.1.weight"][2])  # pain is new
    with pytest.raises(ValueError, match="--arch resnet18"):
        init_from_model(str(old_dir), "efficientnet_lite0", ["anger", "pain"], 0.2)


def test_a_run_from_init_inherits_its_starts_training_images_and_names_its_start(tmp_path):
    # The start model learnt from `seen`; the new run learns from `fresh` on top. Evaluating the new
    # model on `seen` must still warn, and model.json must not claim the unused --weights default.
    from face_emotion.data.scan import scan_dataset
    from face_emotion.models.spec import TRAIN_DIGEST_CHARS

    seen = make_learnable_dataset(tmp_path / "seen", per_class=4, seed=1)
    start_digests = "".join(s.digest[:TRAIN_DIGEST_CHARS] for s in scan_dataset([seen]).samples)
    start = make_tiny_model(tmp_path / "start", classes=tuple(LEARNED_CLASSES), name="start-model",
                            training={"train_sha256_prefixes": start_digests})
    fresh = make_learnable_dataset(tmp_path / "fresh", per_class=8, seed=2)
    result = run_training(tiny_config([fresh], tmp_path / "run", init=str(start), weights="imagenet"))
    written = json.loads((tmp_path / "run" / "model.json").read_text())["training"]
    assert written["weights"] != "imagenet" and "start-model" in written["weights"]
    assert written["init_model"]["name"] == "start-model" and written["init_model"]["train_images"] == 12
    packed = written["train_sha256_prefixes"]
    assert packed.startswith(start_digests)
    assert len(packed) == len(start_digests) + TRAIN_DIGEST_CHARS * result.spec.data["split_sizes"]["train"]
    assert evaluate_folder(tmp_path / "run", seen)["model_training_images"] == 12


def test_train_init_that_is_not_there_names_the_init_flag(tmp_path):
    data = make_learnable_dataset(tmp_path / "data", per_class=2)
    for value in ("nope", str(tmp_path)):
        result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "run"), "--init", value])
        assert result.exit_code == 1
        assert f"--init {value}:" in result.output and "--model" not in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_train_cli_reports_the_data_and_every_epoch_without_a_progress_bar(tmp_path):
    data = make_learnable_dataset(tmp_path / "data", per_class=8)
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "run"), "--arch", "resnet18",
                                       "--weights", "none", "--image-size", "32", "--epochs", "2", "--no-detect",
                                       "--batch-size", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "data: 24 images in 3 classes" in result.output
    assert "train: 18 images; anger 6, happiness 6, sadness 6" in result.output  # split per class
    assert "epoch 1/2:" in result.output and "epoch 2/2:" in result.output and "val_macro_f1" in result.output
    assert "litlogger" not in result.output and "LeafSpec" not in result.output


@pytest.mark.parametrize(("mistake", "arguments", "said"), [
    ("precision", ["--precision", "bogus"], "--precision"),
    ("classes", ["--classes", "anger,angry"], "twice"),
    ("image size", ["--image-size", "8"], "image_size must be between"),
    ("one class", ["--classes", "anger"], "at least two classes"),
])
def test_train_mistakes_are_one_line_and_leave_no_run_folder(tmp_path, mistake, arguments, said):
    """Every user mistake is a FaceEmotionError, caught once by the CLI: one line, exit status 1."""
    data = make_learnable_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    base = ["train", str(data), "--out", str(out), "--arch", "resnet18", "--weights", "none", "--image-size", "32",
            "--epochs", "1", "--no-detect", "--batch-size", "4", "--no-progress", "--accelerator", "cpu"]
    result = CliRunner().invoke(main, base + arguments)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert said in line
    assert not out.exists()


def test_temperature_scaling_fixes_overconfidence():
    generator = torch.Generator().manual_seed(0)
    n, classes = 3000, 3
    targets = torch.randint(0, classes, (n,), generator=generator)
    correct = torch.rand(n, generator=generator) < 0.7  # 70 % right ...
    predicted = torch.where(correct, targets, (targets + 1) % classes)
    logits = torch.randn(n, classes, generator=generator) + 8 * torch.nn.functional.one_hot(predicted, classes)
    # ... but nearly 100 % confident: an honest temperature is well above 1.
    temperature = fit_temperature(logits, targets)
    assert temperature > 2
    before = expected_calibration_error(torch.softmax(logits, 1), targets)
    after = expected_calibration_error(torch.softmax(logits / temperature, 1), targets)
    assert before > 0.2 and after < before / 3


# ---------------------------------------------------------------- bad files, local weights


@pytest.fixture(scope="module")
def resnet18_state_dict():
    import torchvision

    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_training_goes_on_past_unreadable_files_and_names_them(tmp_path, resnet18_state_dict):
    data = odd.make_odd_dataset(tmp_path / "odd")
    weights = tmp_path / "resnet18_local.pth"
    torch.save(resnet18_state_dict, weights)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", str(data.root), "--out", str(out), "--arch", "resnet18", "--weights", str(weights),
        "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--accelerator", "cpu", "--devices", "1",
        "--no-progress", "--no-detect",
    ])
    assert result.exit_code == 0, result.output
    for path in data.corrupt:
        assert str(path) in result.output  # named where the user sees it ...
    assert "truncated" in result.output
    listed = {row["path"]: row["reason"] for row in split_rows(out / "skipped.csv")}
    for path in data.corrupt + data.not_images + data.cross_class:
        assert listed.get(str(path)), path  # ... and every skipped file, with its reason, in the run folder
    metrics = assert_complete_run_folder(out, sorted(set(odd.ODD_FOLDERS.values())))
    used = {r["path"] for r in split_rows(out / "split.csv")}
    assert len(used) == len(data.readable)
    assert not any(Path(p).name in ("truncated.jpg", "not_really.jpg", "empty.png") for p in used)
    spec = read_spec(out)
    assert spec.training["weights"] == str(weights)
    assert spec.data["n_skipped"] == len(listed)
    assert metrics["n"] == spec.data["split_sizes"]["test"]


@pytest.mark.parametrize("n_train, dropped", [(17, True), (33, True), (16, False), (18, False), (1, False)])
def test_a_lone_last_training_image_is_left_for_the_next_epoch(n_train, dropped):
    """BatchNorm cannot train on a batch of one 1 x 1 feature map (32 px ResNet input)."""
    from face_emotion.data.datamodule import FaceDataModule
    from face_emotion.data.scan import Sample
    from face_emotion.models.spec import PreprocessSpec

    samples = [Sample(Path(f"/x/{i}.png"), "anger", "x", str(i)) for i in range(n_train)]
    module = FaceDataModule({"train": samples, "val": [], "test": []}, ["anger"], PreprocessSpec(image_size=32),
                            batch_size=16)
    loader = module.train_dataloader()
    assert loader.drop_last is dropped
    sizes = [min(16, n_train - start) for start in range(0, n_train, 16)]
    expected = len(sizes) - 1 if dropped else len(sizes)
    assert len(loader) == expected


# ---------------------------------------------------------------- (d) weights


def test_imagenet_weights_unavailable_stop_with_a_clear_message(tmp_path, monkeypatch):
    import urllib.request

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        create_network("resnet18", 3, weights="imagenet")
    message = str(info.value)
    assert "could not be loaded" in message and "--weights none" in message and "--weights PATH" in message
    assert str(tmp_path / "torch-home") in message  # where to put the file


def test_train_cli_with_unavailable_imagenet_weights_fails_without_training(tmp_path, monkeypatch):
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    data = make_learnable_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(out), "--arch", "resnet18",
                                       "--weights", "imagenet", "--image-size", "32", "--epochs", "1", "--no-detect"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert "Traceback" not in result.output
    assert "ImageNet weights for resnet18 could not be loaded" in result.output
    # It names the options that work offline, and leaves no run folder behind.
    assert "--arch efficientnet_lite0" in result.output and "--init bundled" in result.output
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_fills_the_feature_extractor(tmp_path, resnet18_state_dict, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in resnet18_state_dict.items()}, str(path))
    else:
        torch.save(resnet18_state_dict, path)
    network = create_network("resnet18", 3, dropout=0.2, weights=str(path))
    state = network.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean"):
        assert torch.equal(state[key], resnet18_state_dict[key])
    assert state["fc.1.weight"].shape == (3, 512)  # a new head for our classes
    fresh = create_network("resnet18", 3, dropout=0.2, weights="none").state_dict()
    assert not torch.equal(fresh["conv1.weight"], resnet18_state_dict["conv1.weight"])


class _Booby:
    """Unpickling this would create a file: the proof that a loader ran pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_objects_that_are_not_a_state_dict_are_refused(tmp_path):
    import torchvision

    marker = tmp_path / "code-ran"
    booby = tmp_path / "booby.pth"
    torch.save({"conv1.weight": _Booby(marker)}, booby)
    with pytest.raises(WeightsUnavailableError, match="cannot read weights file"):
        create_network("resnet18", 3, weights=str(booby))
    assert not marker.exists()

    whole_model = tmp_path / "whole_model.pth"
    torch.save(torchvision.models.resnet18(weights=None), whole_model)
    with pytest.raises(WeightsUnavailableError):
        create_network("resnet18", 3, weights=str(whole_model))

    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], a_list)
    with pytest.raises(WeightsUnavailableError, match="does not hold a state dict"):
        create_network("resnet18", 3, weights=str(a_list))


def test_weights_of_another_architecture_or_a_missing_file_are_refused(tmp_path):
    import torchvision

    other = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), other)
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        create_network("resnet18", 3, weights=str(other))
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        create_network("resnet18", 3, weights=str(tmp_path / "missing.pth"))


# ---------------------------------------------------------------- (e) tampered model files


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target / "model.safetensors"


def _rewrite_spec(path: Path, **changes) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        spec = json.loads(handle.metadata()[SPEC_METADATA_KEY])
    spec.update(changes)
    save_file(load_file(str(path)), str(path), metadata={SPEC_METADATA_KEY: json.dumps(spec)})


def test_an_intact_copy_loads(model_copy):
    network, spec = load_model(model_copy)
    assert spec.architecture == "resnet18" and spec.classes == ("anger", "happiness", "sadness")
    with torch.inference_mode():
        assert network(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_a_truncated_model_file_is_refused(model_copy):
    data = model_copy.read_bytes()
    model_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        load_model(model_copy)


@pytest.mark.parametrize("where", ["length", "json"])
def test_flipped_header_bytes_are_refused(model_copy, where):
    data = bytearray(model_copy.read_bytes())
    if where == "length":
        (length,) = struct.unpack("<Q", bytes(data[:8]))
        data[:8] = struct.pack("<Q", length + 977)
    else:
        data[8] ^= 0xFF  # the opening brace of the JSON header
        data[9] ^= 0xFF
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError):
        load_model(model_copy)


def test_a_spec_naming_the_wrong_architecture_is_refused(model_copy):
    _rewrite_spec(model_copy, architecture="resnet50")
    with pytest.raises(ModelLoadError, match="do not match"):
        load_model(model_copy)


def test_a_spec_with_more_classes_than_the_weights_is_refused(model_copy):
    _rewrite_spec(model_copy, classes=["anger", "happiness", "sadness", "fear"])
    with pytest.raises(ModelLoadError):
        load_model(model_copy)


def test_an_unknown_architecture_or_no_description_is_refused(model_copy, tmp_path):
    _rewrite_spec(model_copy, architecture="vgg_nonexistent")
    with pytest.raises(ModelLoadError, match="unknown architecture"):
        load_model(model_copy)
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(2)}, str(bare))
    with pytest.raises(ModelLoadError, match="no face-emotion description"):
        load_model(bare)


def test_non_finite_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = make_tiny_model(tmp_path / "nan") / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(path))
    state["fc.1.weight"][0, 0] = float("nan")
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(ModelLoadError, match="NaN"):
        load_model(path)


def test_a_missing_model_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no model at"):
        load_model(tmp_path / "nowhere")


# ---------------------------------------------------------------- (c) resume


def test_resume_continues_from_the_last_checkpoint_with_the_same_split(tmp_path, monkeypatch, recwarn):
    from face_emotion.training.module import EmotionClassifier

    data = make_learnable_dataset(tmp_path / "data", per_class=12)
    out = tmp_path / "run"
    first = run_training(tiny_config([data], out, epochs=1))
    assert first is not None and (out / "checkpoints" / "last.ckpt").is_file()
    split_before = (out / "split.csv").read_bytes()
    logged_before = split_rows(out / "logs" / "metrics.csv")
    steps_per_epoch = -(-first.spec.data["split_sizes"]["train"] // 16)

    # A new image appears in the data folder: a resumed run must not let it into any split.
    extra = data / "happy" / "new_arrival.png"
    odd.noise_rgb(99, size=(40, 40)).save(extra)

    calls = []
    original = EmotionClassifier.training_step

    def counting(self, batch, batch_idx):
        calls.append(self.current_epoch)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(EmotionClassifier, "training_step", counting)
    second = run_training(tiny_config([data], out, epochs=2, resume=True))
    # Only the second epoch was trained: epoch 0 came from the checkpoint.
    assert calls == [1] * steps_per_epoch
    assert (out / "split.csv").read_bytes() == split_before
    assert "new_arrival.png" not in split_before.decode()
    assert second.spec.training["epochs_run"] == 2
    logged = split_rows(out / "logs" / "metrics.csv")
    val_rows = [r for r in logged if r.get("val_loss")]
    assert [int(r["epoch"]) for r in val_rows] == [0, 1]
    # The first epoch's history is kept as it was logged (the training curves show both epochs).
    first_val = next(r for r in logged_before if r.get("val_loss"))
    assert val_rows[0]["val_loss"] == first_val["val_loss"]
    assert_complete_run_folder(out, LEARNED_CLASSES)
    # The run moves its own logged epochs aside; Lightning has none to delete and warn about.
    assert not [str(w.message) for w in recwarn if "will be deleted" in str(w.message)]


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path, monkeypatch):
    from face_emotion.training.module import EmotionClassifier

    data = make_learnable_dataset(tmp_path / "data", per_class=6)
    calls = []
    original = EmotionClassifier.training_step

    def counting(self, batch, batch_idx):
        calls.append(self.current_epoch)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(EmotionClassifier, "training_step", counting)
    result = run_training(tiny_config([data], tmp_path / "run", epochs=1, resume=True, batch_size=32))
    assert result is not None and calls == [0]


# ---------------------------------------------------------------- (b) two CPU processes (DDP/gloo)


@pytest.mark.slow
def test_two_cpu_devices_run_ddp_and_write_a_complete_run(tmp_path):
    data = make_learnable_dataset(tmp_path / "data", per_class=12)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    completed = subprocess.run(
        [sys.executable, "-m", "face_emotion", "train", str(data), "--out", str(out), "--arch", "resnet18",
         "--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
         "--devices", "2", "--accelerator", "cpu", "--no-progress", "--no-detect"],
        capture_output=True, text=True, timeout=420, env=env, cwd=tmp_path,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "MEMBER: 2/2" in output and "gloo" in output  # really two processes
    assert output.count("model written to") == 1  # rank 0 alone reports and writes
    metrics = assert_complete_run_folder(out, LEARNED_CLASSES)
    assert metrics["split"] == "test" and metrics["n"] == 6
    assert len(split_rows(out / "split.csv")) == 36
    spec = read_spec(out)
    assert spec.training["devices"] == 2 and spec.training["accelerator"] == "cpu"
    network, _ = load_model(out)
    with torch.inference_mode():
        assert torch.isfinite(network(torch.zeros(2, 3, 32, 32))).all()


def test_photo_datasets_train_on_detected_faces_and_name_faceless_images(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image, ImageOps

    photo = Image.fromarray(skimage_data.astronaut())
    for folder, transform in (("happy", lambda im: im), ("sad", ImageOps.mirror)):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        for i in range(5):
            variant = transform(photo).rotate(2 * i - 4).resize((400 + 20 * i, 400 + 20 * i))
            variant.save(tmp_path / "photos" / folder / f"{i}.jpg")
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "photos" / "sad" / "coffee.jpg")

    result = run_training(tiny_config([tmp_path / "photos"], tmp_path / "run", detect=True))
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert reasons == {"coffee.jpg": "no face found"}
    split_rows = list(csv.DictReader(open(tmp_path / "run" / "split.csv")))
    assert len(split_rows) == 10 and not any(r["path"].endswith("coffee.jpg") for r in split_rows)
    assert result.metrics["n"] == sum(r["split"] == "test" for r in split_rows)


def test_train_help_shows_the_defaults_of_the_one_config():
    from face_emotion.training.config import TrainConfig

    text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert f"--epochs INTEGER [default: {TrainConfig.epochs}]" in text
    assert "[default: the --init model's, else landmarks]" in text and "the --init model's, else resnet50" in text


def test_model_card_names_an_init_model_and_keeps_machine_data_out_of_its_text():
    # An --init bundled run used to read "Initial weights: imagenet" (the unused --weights default)
    # and print the 1,000-character training-image digest string in its Training line.
    from face_emotion.evaluation.model_card import render_model_card
    from face_emotion.models.spec import ModelSpec, PreprocessSpec

    digests = "0123456789abcdef" * 64
    spec = ModelSpec(architecture="efficientnet_lite0", classes=("anger", "happiness"), name="card-test",
                     preprocess=PreprocessSpec(image_size=80),
                     training={"init": "bundled", "weights": "imagenet", "epochs": 3, "train_sha256_prefixes": digests})
    card = render_model_card(spec)
    assert "- Initial weights: the bundled face-emotion model (--init bundled)" in card
    assert "imagenet" not in card.split("## Training")[0]
    assert digests not in card and "train_sha256_prefixes=(1,024 characters" in card
    assert max(len(line) for line in card.splitlines()) < 400
    fresh = render_model_card(ModelSpec(architecture="resnet18", classes=("a", "b"), name="x",
                                        preprocess=PreprocessSpec(image_size=64), training={"weights": "imagenet"}))
    assert "- Initial weights: imagenet" in fresh


def test_a_fresh_run_cuts_crops_as_a_fresh_model_file_says_and_old_files_keep_their_margin(tmp_path):
    fresh = TrainConfig(data_dirs=[str(tmp_path)], out_dir=str(tmp_path / "run"))
    written = PreprocessSpec()
    assert (fresh.image_size, fresh.color_mode, fresh.face_margin, fresh.face_align) == (
        written.image_size, written.color_mode, written.face_margin, written.face_align)
    # A description from before the margin was recorded reads as the quarter margin it was cut with.
    old = ModelSpec(architecture="resnet18", classes=("anger", "happiness")).to_dict()
    del old["preprocess"]["face_margin"]
    assert ModelSpec.from_dict(old).preprocess.face_margin == 0.25
    assert ModelSpec.from_dict(old).preprocess.face_margin != written.face_margin
