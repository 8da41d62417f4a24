"""The in-memory training path: crop bank, batch augmentation on the device, soft targets,
distillation, and `--init` carrying the crop settings of the model it starts from."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.support.synthetic import make_learnable_dataset

from face_emotion.data.augment import normalise, sample_crops
from face_emotion.data.crop_bank import (
    GIVEN,
    TEMPLATE,
    build_crop_bank,
    detect_largest_faces,
    given_view,
    read_digest_table,
    template_view,
)
from face_emotion.data.scan import scan_dataset
from face_emotion.models.spec import PreprocessSpec
from face_emotion.transforms import AugmentSettings, eval_transform

GREY48 = PreprocessSpec(image_size=80, color_mode="grayscale", face_resolution=48, face_margin=0.0)


def test_an_unaugmented_bank_view_is_the_eval_transform_of_the_file(tmp_path):
    # The in-memory path must show the network what inference shows it: same framing, same pixels.
    from tests.support.synthetic import PATTERNS, pattern_image

    rng = np.random.default_rng(0)
    for folder, kind in PATTERNS.items():  # 96 px files, as AffectNet's: brought down to the 48 px detail level
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(2):
            pattern_image(kind, rng, size=96).save(tmp_path / "data" / folder / f"{i}.png")
    scan = scan_dataset([tmp_path / "data"], workers=1)
    bank, skipped = build_crop_bank(scan.samples, GREY48, detect=False, given=True)
    assert not skipped and len(bank.pixels) == len(scan.samples) and set(bank.kind.tolist()) == {GIVEN}
    images = sample_crops(torch.from_numpy(bank.pixels), 80, bank.core_fraction, AugmentSettings.named("none"))
    ours = normalise(images, GREY48.mean, GREY48.std, grey=True).numpy()
    for i, owner in enumerate(bank.sample_index.tolist()):
        expected = eval_transform(GREY48)(Image.open(scan.samples[owner].path))
        # Interior pixels; at the border the eval resize clamps to the crop, the bank sees context.
        diff = np.abs(ours[i][:, 4:-4, 4:-4] - expected[:, 4:-4, 4:-4]).max()
        assert diff < 0.05, (i, diff)  # ~1 grey level after normalisation: rounding, not framing


def test_augmentation_changes_images_and_zoom_out_shows_the_context(tmp_path):
    side = 72
    pixels = np.zeros((2, side, side), np.uint8)
    pixels[:, 12:60, 12:60] = 200  # the crop is bright, its stored context dark
    batch = torch.from_numpy(pixels)
    plain = sample_crops(batch, 80, 48 / 72, AugmentSettings.named("none"))
    assert plain[:, :, 1:-1, 1:-1].min() > 0.7  # no context visible at zoom 1 (the outer pixel ring blends)
    wide = AugmentSettings((1.25, 1.25), 0.0, 0.0, False, 0.0, 0.0, 0.0)
    zoomed = sample_crops(batch, 80, 48 / 72, wide)
    assert zoomed[:, :, :3, :].max() < 0.1 and zoomed[:, :, 38:42, 38:42].min() > 0.7
    jittered = sample_crops(batch, 80, 48 / 72, AugmentSettings.named("default", zoom_out=1.2),
                            torch.Generator().manual_seed(0))
    assert not torch.allclose(jittered, plain)


def test_template_view_core_is_the_models_crop():
    from face_emotion.faces.base import Face
    from face_emotion.faces.crop import crop_for_model

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (200, 240, 3), dtype=np.uint8)).convert("RGB")
    face = Face((60, 40, 90, 100), 0.9, {"right_eye": (85.0, 75.0), "left_eye": (125.0, 78.0), "nose": (105.0, 98.0),
                                         "mouth_right": (90.0, 118.0), "mouth_left": (122.0, 120.0)})
    view = template_view(photo, face, GREY48, context=0.25).astype(np.float32)
    cut = crop_for_model(photo, face, GREY48)[0].convert("L")
    crop = np.asarray(cut.resize((48, 48), Image.Resampling.BILINEAR), np.float32)
    core = view[12:60, 12:60]
    assert np.corrcoef(core.ravel(), crop.ravel())[0, 1] > 0.9
    # and the given view of a file keeps the whole file at the core
    given = given_view(photo, GREY48, 0.25)
    assert given.shape == (72, 72)


def test_digest_tables_map_class_names_and_name_what_is_missing(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("sha256_prefix,angry,happy,extra\nabc123,1.5,-2,7\n")
    table = read_digest_table(path, ["happiness", "anger"])
    assert table["abc123"].tolist() == [-2.0, 1.5]
    with pytest.raises(ValueError, match="sadness"):
        read_digest_table(path, ["happiness", "sadness"])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_distillation_learns_from_the_teacher_when_the_labels_are_noise(tmp_path):
    # Folder labels shuffled at random carry no information; the teacher's logits carry the truth.
    # A student trained on the teacher alone must beat chance on test images it never saw.
    from face_emotion.training.config import TrainConfig
    from face_emotion.training.run import run_training

    clean = make_learnable_dataset(tmp_path / "clean", per_class=36)
    noisy = tmp_path / "noisy"
    rng = np.random.default_rng(1)
    classes = ["anger", "happiness", "sadness"]
    truth = {"angry": "anger", "happy": "happiness", "Sad": "sadness"}
    rows = []
    for folder in sorted(clean.iterdir()):
        for image in sorted(folder.iterdir()):
            label = classes[int(rng.integers(0, 3))]
            (noisy / label).mkdir(parents=True, exist_ok=True)
            target = noisy / label / f"{folder.name}-{image.name}"
            target.write_bytes(image.read_bytes())
            logits = [4.0 if c == truth[folder.name] else 0.0 for c in classes]
            rows.append([_digest(target)[:12], *logits])
    teacher = tmp_path / "teacher.csv"
    with open(teacher, "w", newline="") as handle:
        csv.writer(handle).writerows([["sha256_prefix", *classes], *rows])
    config = TrainConfig(
        data_dirs=[str(noisy)], out_dir=str(tmp_path / "run"), arch="resnet18", weights="none", image_size=32,
        epochs=8, batch_size=16, lr=3e-3, progress=False, detect=False, distill=str(teacher), distill_alpha=1.0,
        distill_temperature=1.0, schedule="cosine", augment="light", patience=100, test_fraction=0.25,
    )
    result = run_training(config)
    # Score the held-out test split against the true classes (the folder labels are noise).
    from face_emotion.data.scan import read_split_csv
    from face_emotion.inference.backends import PyTorchBackend
    from face_emotion.inference.predictor import Predictor
    from face_emotion.models.store import load_model

    network, spec = load_model(result.model_path)
    predictor = Predictor(PyTorchBackend.from_network(network, spec))
    test = read_split_csv(tmp_path / "run" / "split.csv", {"noisy": str(noisy)})["test"]
    logits = predictor.logits([Image.open(s.path).convert("RGB") for s in test])
    predicted = [spec.classes[i] for i in np.argmax(logits, axis=1)]
    actual = [truth[Path(s.path).name.split("-")[0]] for s in test]
    accuracy = float(np.mean([p == a for p, a in zip(predicted, actual)]))
    assert len(test) >= 20 and accuracy > 0.6, accuracy  # chance is 1/3


def test_init_carries_the_crop_settings_of_the_model_it_starts_from(tmp_path):
    from tests.support.models import make_tiny_model

    from face_emotion.models.store import read_spec
    from face_emotion.training.config import TrainConfig

    model = make_tiny_model(tmp_path / "m", image_size=40)
    spec = read_spec(model)
    config = TrainConfig(data_dirs=[str(tmp_path)], out_dir=str(tmp_path / "run"), init=str(model))
    pre = spec.preprocess
    assert (config.image_size, config.color_mode, config.face_margin, config.face_align, config.face_resolution) == (
        pre.image_size, pre.color_mode, pre.face_margin, pre.face_align, pre.face_resolution)
    given = TrainConfig(data_dirs=[str(tmp_path)], out_dir=str(tmp_path / "run"), init=str(model), image_size=64,
                        face_margin=0.1)
    assert given.image_size == 64 and given.face_margin == 0.1 and given.color_mode == pre.color_mode
    fresh = TrainConfig(data_dirs=[str(tmp_path)], out_dir=str(tmp_path / "run"))
    assert fresh.image_size == 224 and fresh.face_margin == 0.0 and fresh.arch == "resnet50"


def test_both_framings_are_banked_and_trained_with_soft_labels(tmp_path):
    # Crops of a crop dataset are read both ways when asked; soft labels are used where given.
    from face_emotion.training.config import TrainConfig
    from face_emotion.training.run import run_training

    root = make_learnable_dataset(tmp_path / "data", per_class=12)
    scan = scan_dataset([root], workers=1)
    soft = tmp_path / "soft.csv"
    with open(soft, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sha256_prefix", "anger", "happiness", "sadness"])
        for s in scan.samples[:5]:
            writer.writerow([s.digest[:12], 0.6, 0.2, 0.2])
    result = run_training(TrainConfig(
        data_dirs=[str(root)], out_dir=str(tmp_path / "run"), arch="resnet18", weights="none", image_size=32,
        epochs=1, batch_size=8, progress=False, detect=False, soft_labels=str(soft),
    ))
    assert result.metrics["framing"] == "given" and result.metrics["n"] > 0


def test_detected_photos_bank_template_and_given_views_and_faceless_files_keep_only_the_given(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from tests.support.clips import default_detector_available

    if not default_detector_available():
        pytest.skip("the default face detector is not installed")
    (tmp_path / "happy").mkdir()
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "happy" / "astronaut.jpg")
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "happy" / "coffee.jpg")
    scan = scan_dataset([tmp_path], workers=1)
    bank, skipped = build_crop_bank(scan.samples, GREY48, detect=True, given=True)
    kinds = {(scan.samples[o].path.name, int(k)) for o, k in zip(bank.sample_index.tolist(), bank.kind.tolist())}
    assert kinds == {("astronaut.jpg", TEMPLATE), ("astronaut.jpg", GIVEN), ("coffee.jpg", GIVEN)}
    assert not skipped
    only_template, skipped = build_crop_bank(scan.samples, GREY48, detect=True, given=False)
    assert [(Path(s.path).name, s.reason) for s in skipped] == [("coffee.jpg", "no face found")]
    assert set(only_template.kind.tolist()) == {TEMPLATE}


def test_a_face_read_back_from_the_detection_cache_is_the_face_detected(tmp_path, monkeypatch):
    # Evaluation and training read faces from the cache; predict detects afresh. Any rounding in
    # between cuts a different crop from the one users are served.
    from face_emotion.faces.base import Face

    class SubPixel:
        name = "sub-pixel-test"
        calls = 0

        def detect(self, image):
            SubPixel.calls += 1
            marks = {"left_eye": (20.123456789, 11.987654321), "right_eye": (9.87654321, 12.3456789),
                     "nose": (15.0000001, 17.77777), "mouth_left": (19.31, 22.0625), "mouth_right": (10.5, 22.123)}
            return [Face((3, 4, 25, 26), 0.912345678, marks)]

    monkeypatch.setenv("FACE_EMOTION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("face_emotion.faces.create_detector", lambda name=None, **kw: SubPixel())
    (tmp_path / "data" / "happy").mkdir(parents=True)
    Image.new("RGB", (32, 32), (120, 90, 60)).save(tmp_path / "data" / "happy" / "a.png")
    samples = scan_dataset([tmp_path / "data"], workers=1).samples
    fresh, _ = detect_largest_faces(samples)
    cached, _ = detect_largest_faces(samples)
    assert SubPixel.calls == 1  # the second pass read the cache
    digest = samples[0].digest
    assert cached[digest] == fresh[digest] == SubPixel().detect(None)[0]
