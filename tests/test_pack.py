"""Training packs (one file of crops, labels and tables that `train --bank` reads), the noise
figures of compare_models, class weights, and fine-tuning a model on a small set."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tests.support.synthetic import make_learnable_dataset

from face_emotion.cli import main
from face_emotion.data.crop_bank import GIVEN, TEMPLATE, CropBank
from face_emotion.data.scan import Sample

REPO = Path(__file__).resolve().parent.parent


def fake_samples(counts: dict[str, int]) -> list[Sample]:
    return [
        Sample(Path(f"{label}/{i}.png"), label, "src", hashlib.sha256(f"{label}{i}".encode()).hexdigest())
        for label, n in counts.items()
        for i in range(n)
    ]


def test_sqrt_balance_weights_are_the_square_root_of_inverse_frequency():
    from face_emotion.data.datamodule import class_weights
    from face_emotion.training.config import TrainConfig
    from face_emotion.training.data import loss_weights

    samples = fake_samples({"anger": 100, "fear": 25, "disgust": 4})
    classes = ["anger", "fear", "disgust"]
    full = class_weights(samples, classes).numpy()
    root = class_weights(samples, classes, power=0.5).numpy()
    assert np.allclose(full.mean(), 1) and np.allclose(root.mean(), 1)
    assert np.allclose(full / full[0], [1, 4, 25]) and np.allclose(root / root[0], [1, 2, 5])
    config = TrainConfig(data_dirs=[], out_dir="unused", balance="sqrt")
    assert np.allclose(loss_weights(config, {"train": samples}, classes), root)
    assert loss_weights(TrainConfig(data_dirs=[], out_dir="unused"), {"train": samples}, classes) is None


def test_class_figures_and_their_bootstrap_noise():
    from face_emotion.evaluation.resample import bootstrap_std, class_figures

    classes = ["anger", "disgust", "fear", "happiness", "sadness"]
    targets = np.array([0, 0, 1, 2, 3, 3, 4, 4])
    answers = np.array([0, 4, -1, 2, 3, 3, 4, 0])  # one anger read as sadness, a disgust face not found
    figures = class_figures(answers, targets, classes)
    assert figures["accuracy"] == 5 / 8
    assert figures["recall anger"] == 0.5 and figures["recall disgust"] == 0 and figures["recall sadness"] == 0.5
    assert figures["n fear"] == 1
    # F1: anger 2*1/(2+2) = 0.5, disgust 0, fear 1, sadness 2*1/(2+2) = 0.5
    assert np.isclose(figures["negative macro-F1"], np.mean([0.5, 0.0, 1.0, 0.5]))
    perfect = bootstrap_std([targets, answers], targets, classes, rounds=200)
    assert perfect[0]["accuracy"] == 0 and perfect[1]["accuracy"] > 0.05
    spreads = bootstrap_std([answers, answers], targets, classes, rounds=50)
    assert spreads[2]["accuracy"] == 0 and spreads[2]["negative macro-F1"] == 0  # a model minus itself: no noise


def smooth_views(n: int, side: int, seed: int) -> np.ndarray:
    """Views JPEG can keep: smooth gradients and blobs (noise would measure the codec, not the pack)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    views = [
        120 + 80 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y + rng.uniform(0, 1)))
        for _ in range(n)
    ]
    return np.clip(np.stack(views), 0, 255).astype(np.uint8)


def test_a_pack_gives_back_its_views_labels_splits_and_tables(tmp_path):
    from face_emotion.data.pack import read_pack, write_pack

    side, core = 64, 48
    samples = fake_samples({"anger": 6, "happiness": 4})
    owners, kinds = [], []
    for i in range(len(samples)):
        if i % 3:  # every third sample has no face: its given view only
            owners.append(i)
            kinds.append(TEMPLATE)
        owners.append(i)
        kinds.append(GIVEN)
    pixels = smooth_views(len(owners), side, 0)
    pad = (side - core) // 2
    for v, kind in enumerate(kinds):  # a given view is its core with the edge repeated, as the bank builds it
        if kind == GIVEN:
            pixels[v] = np.pad(pixels[v][pad : pad + core, pad : pad + core], pad, mode="edge")
    bank = CropBank(pixels, np.array(owners), np.array(kinds, np.int8), core / side, samples, {})
    splits = {"train": samples[:6], "val": samples[6:8], "test": samples[8:]}
    soft = {s.digest[:12]: np.array([0.7, 0.3], np.float32) for s in samples[:3]}
    teacher = {s.digest: np.array([2.0, -1.0], np.float32) for s in samples[2:5]}
    path = write_pack(
        tmp_path / "p.npz",
        bank,
        splits,
        ["anger", "happiness"],
        soft_labels=soft,
        teacher_logits=teacher,
        meta={"preprocess": {"color_mode": "grayscale"}},
    )
    pack = read_pack(path)
    assert pack.classes == ["anger", "happiness"]
    assert {k: [s.digest for s in v] for k, v in pack.splits.items()} == {
        k: [s.digest for s in v] for k, v in splits.items()
    }
    assert [s.label for s in pack.bank.samples] == [s.label for s in samples]
    # Views come back in the pack's order (template ones, then given ones, per sample); compare by owner and kind.
    got = {
        (pack.bank.samples[o].digest, k): pack.bank.pixels[v]
        for v, (o, k) in enumerate(zip(pack.bank.sample_index, pack.bank.kind))
    }
    want = {(samples[o].digest, k): pixels[v] for v, (o, k) in enumerate(zip(owners, kinds))}
    assert got.keys() == want.keys()
    for key in want:
        assert np.abs(got[key].astype(int) - want[key]).mean() < 3, key  # JPEG at quality 65
    assert pack.bank.core_fraction == core / side and set(pack.soft_labels) == {s.digest for s in samples[:3]}
    assert np.allclose(pack.teacher_logits[samples[3].digest], [2.0, -1.0]) and len(pack.teacher_logits) == 3
    assert pack.meta["preprocess"]["color_mode"] == "grayscale"


def test_a_file_that_is_no_pack_is_one_line_error(tmp_path):
    np.savez(tmp_path / "other.npz", pixels=np.zeros(3))
    (tmp_path / "text.npz").write_text("hello")
    for name in ("other.npz", "text.npz"):
        result = CliRunner().invoke(main, ["train", "--bank", str(tmp_path / name), "--out", str(tmp_path / "run")])
        assert result.exit_code == 1 and "is not a training pack" in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_train_from_a_pack_learns_without_the_files(tmp_path):
    data = make_learnable_dataset(tmp_path / "data", per_class=30)
    pack = tmp_path / "pack.npz"
    made = CliRunner().invoke(
        main,
        [
            "pack",
            str(data),
            "--out",
            str(pack),
            "--no-detect",
            "--image-size",
            "32",
            "--color-mode",
            "grayscale",
            "--test-fraction",
            "0.25",
            "--no-progress",
        ],
    )
    assert made.exit_code == 0, made.output
    assert pack.stat().st_size < 200_000
    for child in list(data.rglob("*.png")):
        child.unlink()  # the pack is all training needs
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--bank",
            str(pack),
            "--out",
            str(tmp_path / "run"),
            "--arch",
            "resnet18",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--color-mode",
            "grayscale",
            "--epochs",
            "10",
            "--schedule",
            "cosine",
            "--patience",
            "100",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--augment",
            "light",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] >= 20
    assert metrics["accuracy"] > 0.6, metrics["accuracy"]  # chance is 1/3


@pytest.mark.slow
def test_gpu_train_script_runs_the_whole_recipe_on_a_cpu(tmp_path):
    data = make_learnable_dataset(tmp_path / "data", per_class=12)
    pack = tmp_path / "pack.npz"
    made = CliRunner().invoke(
        main, ["pack", str(data), "--out", str(pack), "--no-detect", "--init", "bundled", "--no-progress"]
    )
    assert made.exit_code == 0, made.output
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "work"),
        "PACK": str(pack),
        "PYTHON": sys.executable,
        "ACCEL": "cpu",
        "TEACHER_ARCH": "resnet18",
        "TEACHER_SIZE": "32",
        "TEACHER_EPOCHS": "1",
        "STUDENT_EPOCHS": "1",
        "BATCH": "16",
        "OMP_NUM_THREADS": "1",
    }
    subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_train.sh")], env=env, check=True, capture_output=True, timeout=600
    )
    back = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert back == [
        "metrics.json",
        "model.json",
        "model.safetensors",
        "student-epochs.csv",
        "student.log",
        "teacher-metrics.json",
        "teacher.log",
    ]
    from face_emotion.models.store import read_spec

    spec = read_spec(tmp_path / "out" / "model.safetensors")
    assert spec.architecture == "efficientnet_lite0" and set(spec.classes) >= {"anger", "happiness", "sadness"}
    rows = list(csv.DictReader(open(tmp_path / "work" / "teacher-logits.csv")))
    assert len(rows) == 36 and all(len(r["sha256_prefix"]) == 12 for r in rows)


def test_small_set_fine_tuning_defaults_apply_only_when_asked_for(tmp_path):
    from tests.support.models import make_tiny_model

    from face_emotion.training.config import ADAPT_DEFAULTS, ADAPT_MAX_IMAGES, TrainConfig, settle_adaptation

    start = str(make_tiny_model(tmp_path / "start"))
    config = TrainConfig(data_dirs=[], out_dir="unused", init=start, lr=5e-4)
    assert settle_adaptation(config, 100)
    assert config.lr == 5e-4  # the user's own value stays
    assert config.l2sp == ADAPT_DEFAULTS["l2sp"] and config.keep_start and config.test_fraction == 0
    big = TrainConfig(data_dirs=[], out_dir="unused", init=start)
    assert not settle_adaptation(big, ADAPT_MAX_IMAGES + 1) and big.l2sp == 0 and not big.keep_start
    off = TrainConfig(data_dirs=[], out_dir="unused", init=start, adapt="off")
    assert not settle_adaptation(off, 100) and off.test_fraction == TrainConfig.test_fraction
    fresh = TrainConfig(data_dirs=[], out_dir="unused")
    assert not settle_adaptation(fresh, 100)


def test_fine_tuning_keeps_the_start_when_the_result_is_worse_on_validation(tmp_path):
    from face_emotion.models.store import load_model
    from face_emotion.training.config import TrainConfig
    from face_emotion.training.run import run_training

    data = make_learnable_dataset(tmp_path / "data", per_class=16)
    good = run_training(
        TrainConfig(
            data_dirs=[str(data)],
            out_dir=str(tmp_path / "start"),
            arch="resnet18",
            weights="none",
            image_size=32,
            epochs=6,
            batch_size=16,
            lr=3e-3,
            progress=False,
            detect=False,
            augment="light",
            test_fraction=0.0,
        )
    )
    # A learning rate that wrecks the network: the run must hand back its start.
    ruined = run_training(
        TrainConfig(
            data_dirs=[str(data)],
            out_dir=str(tmp_path / "run"),
            init=str(good.model_path),
            epochs=1,
            lr=50.0,
            backbone_lr_ratio=1.0,
            batch_size=16,
            progress=False,
            detect=False,
            augment="light",
        )
    )
    assert ruined.spec.training["kept_start"] and ruined.spec.training["l2sp"] > 0
    before, _ = load_model(good.model_path)
    after, _ = load_model(ruined.model_path)
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        assert torch.allclose(a, b), name


def test_fine_tuning_keeps_the_classes_the_data_lacks(tmp_path):
    from tests.support.models import make_tiny_model

    from face_emotion.models.store import load_model
    from face_emotion.training.config import TrainConfig
    from face_emotion.training.run import run_training

    start = make_tiny_model(tmp_path / "start", classes=("anger", "happiness", "sadness", "surprise"))
    data = make_learnable_dataset(tmp_path / "data", per_class=10)  # anger, happiness, sadness: no surprise
    result = run_training(
        TrainConfig(
            data_dirs=[str(data)],
            out_dir=str(tmp_path / "run"),
            init=str(start),
            epochs=2,
            batch_size=16,
            progress=False,
            detect=False,
            augment="light",
        )
    )
    assert result.spec.classes == ("anger", "happiness", "sadness", "surprise")
    before, _ = load_model(start / "model.safetensors")
    after, _ = load_model(result.model_path)
    old, new = before.state_dict(), after.state_dict()
    head = [k for k in old if k.startswith("fc.") and k.endswith("weight")][-1]
    # Left out of the loss, surprise's head row moves only by weight decay; the trained rows move.
    assert torch.allclose(old[head][3], new[head][3], rtol=1e-2, atol=1e-4)
    assert not torch.allclose(old[head][:3], new[head][:3], atol=1e-4)
    # A class the start does not know makes a new task: exactly the data's classes.
    (data / "pain").mkdir()
    from PIL import Image, ImageOps

    for image in sorted((data / "angry").iterdir())[:5]:
        ImageOps.flip(Image.open(image)).save(data / "pain" / image.name)
    new_task = run_training(
        TrainConfig(
            data_dirs=[str(data)],
            out_dir=str(tmp_path / "run2"),
            init=str(start),
            epochs=1,
            progress=False,
            detect=False,
            augment="light",
        )
    )
    assert new_task.spec.classes == ("anger", "happiness", "pain", "sadness")


def test_fine_tuning_a_model_on_a_small_set_learns_what_it_did_not_know(tmp_path):
    # A start that knows nothing of the stripes; the small-set defaults (head fast, backbone slow,
    # pulled back by L2-SP) must still learn them from 60 images and beat it on unseen ones.
    from tests.support.models import make_tiny_model

    from face_emotion.training.config import TrainConfig
    from face_emotion.training.run import run_training

    start = make_tiny_model(tmp_path / "start")
    data = make_learnable_dataset(tmp_path / "data", per_class=20)
    test = make_learnable_dataset(tmp_path / "test", per_class=15, seed=5)
    config = TrainConfig(
        data_dirs=[str(data)],
        out_dir=str(tmp_path / "run"),
        init=str(start),
        epochs=12,
        batch_size=16,
        progress=False,
        detect=False,
        augment="light",
    )
    result = run_training(config)
    assert not result.spec.training.get("kept_start")
    from face_emotion.evaluation.evaluate import evaluate_folder

    after = evaluate_folder(result.model_path, test)["accuracy"]
    before = evaluate_folder(start, test)["accuracy"]
    assert after > 0.6 and after > before + 0.15, (before, after)  # chance is 1/3


def test_a_small_file_keeps_one_image_and_its_template_view_is_cut_again_on_reading(tmp_path):
    from PIL import Image

    from face_emotion.data.crop_bank import given_view, template_view
    from face_emotion.data.pack import read_pack, write_pack
    from face_emotion.faces.base import Face
    from face_emotion.models.spec import PreprocessSpec

    pre = PreprocessSpec(image_size=80, color_mode="grayscale", face_resolution=48, face_align="eyes", face_margin=0.0)
    context = (56 / 48 - 1) / 2
    samples = fake_samples({"anger": 2, "happiness": 2})
    files = [Image.fromarray(v) for v in smooth_views(len(samples), 48, 3)]
    faces = [Face((6 + i, 8, 30, 32), 0.9, {"left_eye": (16.0 + i, 20.0), "right_eye": (32.0, 21.0 + i)})
             for i in range(len(samples))]
    pixels, owners, kinds = [], [], []
    for i, (image, face) in enumerate(zip(files, faces)):
        pixels += [template_view(image, face, pre, context), given_view(image, pre, context)]
        owners += [i, i]
        kinds += [TEMPLATE, GIVEN]
    bank = CropBank(np.stack(pixels), np.array(owners), np.array(kinds, np.int8), 48 / 56, samples, {})
    meta = {"preprocess": {k: getattr(pre, k) for k in ("image_size", "color_mode", "face_margin", "face_align",
                                                          "face_resolution")}}
    path = write_pack(tmp_path / "p.npz", bank, {"train": samples}, ["anger", "happiness"], meta=meta,
                      rebuild={s.digest: f for s, f in zip(samples, faces)})
    pack = read_pack(path)
    assert pack.meta["n_template"] == 0  # no template view stored: each is cut again
    for view, (owner, kind) in enumerate(zip(pack.bank.sample_index, pack.bank.kind)):
        original = pixels[2 * owner + (0 if kind == TEMPLATE else 1)]
        assert np.abs(pack.bank.pixels[view].astype(int) - original).mean() < 3, (owner, kind)
