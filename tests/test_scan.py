"""Class aliases, dataset scanning (odd files, duplicates, subsets, given splits) and splitting."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import pytest

from face_emotion.classes import CANONICAL_CLASSES, canonical_class, parse_class_list
from face_emotion.data.scan import (
    Sample,
    read_split_csv,
    scan_dataset,
    stratified_split,
    write_skipped_csv,
    write_split_csv,
)
from face_emotion.training.config import TrainConfig
from face_emotion.training.data import run_splits as _splits
from support import odd_images as odd

# ---------------------------------------------------------------- class names


@pytest.mark.parametrize(
    "folder, canonical",
    [
        ("angry", "anger"), ("ANGRY", "anger"), ("Anger", "anger"),
        ("happy", "happiness"), ("Happy", "happiness"), ("HAPPINESS", "happiness"),
        ("sad", "sadness"), ("SAD", "sadness"),
        ("surprised", "surprise"), ("Surprised", "surprise"),
        ("fearful", "fear"), ("Fear", "fear"),
        ("disgusted", "disgust"), ("Disgust", "disgust"),
        ("pain", "pain"), (" Neutral ", "neutral"), ("03_happy", "happiness"),
    ],
)
def test_folder_aliases_map_to_canonical_names(folder, canonical):
    assert canonical_class(folder) == canonical


def test_canonical_names_map_to_themselves_and_unknown_names_are_kept_lower_case():
    assert all(canonical_class(name) == name for name in CANONICAL_CLASSES)
    assert canonical_class("Boredom") == "boredom"


def test_class_list_keeps_the_users_order_after_alias_mapping():
    assert parse_class_list("Surprised, angry,happy") == ["surprise", "anger", "happiness"]
    with pytest.raises(ValueError, match="twice"):
        parse_class_list("happy,Happiness")
    with pytest.raises(ValueError, match="empty"):
        parse_class_list(" , ")


# ---------------------------------------------------------------- scanning the odd dataset


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> odd.OddDataset:
    return odd.make_odd_dataset(tmp_path_factory.mktemp("scan") / "odd")


@pytest.fixture(scope="module")
def odd_scan(odd_data):
    return scan_dataset(odd_data.root)


def test_folders_with_alias_names_become_canonical_classes(odd_scan, odd_data):
    assert odd_scan.classes == sorted(set(odd.ODD_FOLDERS.values()))
    assert odd_scan.counts() == odd_data.per_class()


def test_every_readable_format_is_kept_with_its_label(odd_scan, odd_data):
    kept = {s.path: s.label for s in odd_scan.samples}
    assert kept == odd_data.readable
    suffixes = {p.suffix.lower() for p in kept}
    assert {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tiff", ".gif"} <= suffixes
    for sample in odd_scan.samples:
        assert sample.digest == hashlib.sha256(sample.path.read_bytes()).hexdigest()
        assert sample.source == "odd"


def test_unreadable_files_are_listed_with_path_and_reason(odd_scan, odd_data):
    reasons = {s.path: s.reason for s in odd_scan.skipped}
    for path in odd_data.corrupt + odd_data.not_images:
        assert str(path) in reasons, path
        assert reasons[str(path)].strip()
    assert "truncated" in reasons[str(odd_data.root / "Happy" / "truncated.jpg")]
    assert "not a recognised image" in reasons[str(odd_data.root / "angry" / "not_really.jpg")]
    assert "empty" in reasons[str(odd_data.root / "SAD" / "empty.png")]
    assert "not an image file type" in reasons[str(odd_data.root / "angry" / "notes.txt")]
    # Hidden files (.DS_Store) are neither used nor reported.
    for path in odd_data.hidden:
        assert str(path) not in reasons
        assert path not in {s.path for s in odd_scan.samples}


def test_byte_identical_files_in_one_class_keep_one_copy(odd_scan, odd_data):
    kept = {s.path for s in odd_scan.samples}
    reasons = {s.path: s.reason for s in odd_scan.skipped}
    for original, copy in odd_data.duplicates:
        assert original in kept and copy not in kept
        assert reasons[str(copy)] == f"duplicate of {original}"
    assert odd_scan.duplicates_removed == len(odd_data.duplicates)
    assert len({s.digest for s in odd_scan.samples}) == len(odd_scan.samples)


def test_a_file_under_two_classes_is_dropped_and_reported(odd_scan, odd_data):
    kept = {s.path for s in odd_scan.samples}
    reasons = {s.path: s.reason for s in odd_scan.skipped}
    digest = hashlib.sha256(odd_data.cross_class[0].read_bytes()).hexdigest()
    assert digest not in {s.digest for s in odd_scan.samples}
    for path in odd_data.cross_class:
        assert path not in kept
        assert "happiness" in reasons[str(path)] and "sadness" in reasons[str(path)]


def test_summary_counts_what_was_used_and_skipped(odd_scan, odd_data):
    summary = odd_scan.summary()
    assert summary["n_images"] == len(odd_data.readable)
    expected_skips = (len(odd_data.corrupt) + len(odd_data.not_images) + len(odd_data.duplicates)
                      + len(odd_data.cross_class))
    assert summary["n_skipped"] == expected_skips
    assert summary["duplicates_removed"] == 2
    assert summary["roots"] == {"odd": str(odd_data.root.absolute())}


def test_skipped_csv_lists_path_and_reason(odd_scan, tmp_path):
    path = tmp_path / "skipped.csv"
    write_skipped_csv(odd_scan.skipped, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "path,reason"
    assert len(lines) == 1 + len(odd_scan.skipped)
    assert any("truncated.jpg" in line and "truncated" in line.split(",", 1)[1] for line in lines[1:])


def test_class_subset_picks_and_orders_and_lists_other_folders(odd_data):
    scan = scan_dataset(odd_data.root, parse_class_list("Surprised,ANGRY"))
    assert scan.classes == ["surprise", "anger"]
    assert {s.label for s in scan.samples} == {"surprise", "anger"}
    assert len(scan.samples) == odd_data.per_class()["surprise"] + odd_data.per_class()["anger"]
    assert scan.skipped_folders == sorted(str(odd_data.root / name) for name in ("Happy", "SAD", "pain"))
    assert scan.summary()["skipped_folders"] == scan.skipped_folders


def test_class_subset_naming_a_class_without_images_is_an_error(odd_data):
    with pytest.raises(ValueError, match="fear"):
        scan_dataset(odd_data.root, ["anger", "fear"])


def test_missing_or_empty_dataset_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    with pytest.raises(ValueError, match="no usable images"):
        scan_dataset(tmp_path / "empty")


def test_duplicates_across_two_dataset_folders_keep_one_copy(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "happy").mkdir(parents=True)
        (tmp_path / name / "happy" / "same.png").write_bytes(odd.noise_png(7))
        (tmp_path / name / "happy" / f"own_{name}.png").write_bytes(odd.noise_png(ord(name)))
    scan = scan_dataset([tmp_path / "a", tmp_path / "b"])
    assert len(scan.samples) == 3
    assert scan.duplicates_removed == 1
    assert set(scan.roots) == {"a", "b"}


# ---------------------------------------------------------------- given train/val/test folders


def _put(root: Path, relative: str, content: bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture()
def given_layout(tmp_path):
    root = tmp_path / "given"
    seeds = iter(range(100, 1000))
    files = {}
    for split in ("Train", "Valid", "Test"):  # split folder names are aliases too
        for folder in ("happy", "Sad"):
            for i in range(4 if split == "Train" else 2):
                files[_put(root, f"{split}/{folder}/{i}.png", odd.noise_png(next(seeds)))] = split
    shared_test = odd.noise_png(next(seeds))
    in_train = _put(root, "Train/happy/leak.png", shared_test)
    in_test = _put(root, "Test/happy/leak_copy.png", shared_test)
    shared_val = odd.noise_png(next(seeds))
    in_train_2 = _put(root, "Train/Sad/leak.png", shared_val)
    in_val = _put(root, "Valid/Sad/leak_copy.png", shared_val)
    conflicting = odd.noise_png(next(seeds))
    conflict_a = _put(root, "Train/happy/conflict.png", conflicting)
    conflict_b = _put(root, "Test/Sad/conflict.png", conflicting)
    return dict(root=root, files=files, in_train=in_train, in_test=in_test, in_train_2=in_train_2,
                in_val=in_val, conflict=(conflict_a, conflict_b))


def test_given_splits_are_used_as_given(given_layout):
    scan = scan_dataset(given_layout["root"])
    assert scan.given_splits is not None
    assert scan.classes == ["happiness", "sadness"]
    names = {"train": "Train", "val": "Valid", "test": "Test"}
    for split, folder in names.items():
        expected = {p for p, s in given_layout["files"].items() if s == folder}
        got = {s.path for s in scan.given_splits[split]}
        extra = got - expected
        assert expected <= got
        # The only extra files are the cross-split copies that the evaluation side keeps.
        assert extra == {"test": {given_layout["in_test"]}, "val": {given_layout["in_val"]}, "train": set()}[split]


def test_a_file_in_two_splits_is_kept_only_on_the_evaluation_side(given_layout):
    scan = scan_dataset(given_layout["root"])
    train = {s.path for s in scan.given_splits["train"]}
    assert given_layout["in_test"] in {s.path for s in scan.given_splits["test"]}
    assert given_layout["in_val"] in {s.path for s in scan.given_splits["val"]}
    assert given_layout["in_train"] not in train and given_layout["in_train_2"] not in train
    reasons = {s.path: s.reason for s in scan.skipped}
    assert reasons[str(given_layout["in_train"])] == f"duplicate of {given_layout['in_test']}"
    assert reasons[str(given_layout["in_train_2"])] == f"duplicate of {given_layout['in_val']}"
    # Under two classes as well as two splits: dropped from both.
    for path in given_layout["conflict"]:
        assert "identical file under classes" in reasons[str(path)]
    digests = [{s.digest for s in scan.given_splits[k]} for k in ("train", "val", "test")]
    assert not (digests[0] & digests[1]) and not (digests[0] & digests[2]) and not (digests[1] & digests[2])


def test_training_uses_the_given_splits_unchanged(given_layout, tmp_path):
    scan = scan_dataset(given_layout["root"])
    config = TrainConfig(data_dirs=[str(given_layout["root"])], out_dir=str(tmp_path / "run"))
    splits = _splits(config, scan, tmp_path)
    for split in ("train", "val", "test"):
        assert sorted(s.path for s in splits[split]) == sorted(s.path for s in scan.given_splits[split])


def test_a_missing_val_folder_is_carved_from_train_only(given_layout, tmp_path):
    shutil.rmtree(given_layout["root"] / "Valid")
    scan = scan_dataset(given_layout["root"])
    assert scan.given_splits["val"] == []
    config = TrainConfig(data_dirs=[str(given_layout["root"])], out_dir=str(tmp_path / "run"), val_fraction=0.25)
    splits = _splits(config, scan, tmp_path)
    assert splits["test"] == scan.given_splits["test"]  # the user's test set is untouched
    assert splits["val"] and {s.path for s in splits["val"]} <= {s.path for s in scan.given_splits["train"]}
    assert not {s.path for s in splits["val"]} & {s.path for s in splits["train"]}
    assert len(splits["train"]) + len(splits["val"]) == len(scan.given_splits["train"])


def test_mixing_split_and_plain_layouts_is_refused(given_layout, odd_data):
    with pytest.raises(ValueError, match="mix"):
        scan_dataset([given_layout["root"], odd_data.root])


# ---------------------------------------------------------------- stratified split


def fake_samples(per_class: dict[str, int], source: str = "data") -> list[Sample]:
    samples = []
    for label, n in per_class.items():
        for i in range(n):
            digest = hashlib.sha256(f"{source}/{label}/{i}".encode()).hexdigest()
            samples.append(Sample(Path(f"/{source}/{label}/{i}.png"), label, source, digest))
    return samples


def test_stratified_split_keeps_class_proportions():
    samples = fake_samples({"anger": 40, "happiness": 100, "pain": 20})
    splits = stratified_split(samples, seed=3)
    for label, n in {"anger": 40, "happiness": 100, "pain": 20}.items():
        counts = {k: sum(s.label == label for s in v) for k, v in splits.items()}
        assert counts["val"] == round(0.15 * n) and counts["test"] == round(0.15 * n)
        assert counts["train"] == n - 2 * round(0.15 * n)


def test_stratified_split_is_a_partition_with_no_image_on_two_sides():
    samples = fake_samples({"anger": 33, "sadness": 17})
    splits = stratified_split(samples, val_fraction=0.2, test_fraction=0.1, seed=1)
    all_paths = [s.path for v in splits.values() for s in v]
    assert sorted(all_paths) == sorted(s.path for s in samples)
    digests = {k: {s.digest for s in v} for k, v in splits.items()}
    assert not (digests["train"] & digests["val"]) and not (digests["train"] & digests["test"])
    assert not (digests["val"] & digests["test"])


def test_stratified_split_is_determined_by_the_seed_alone():
    samples = fake_samples({"anger": 30, "happiness": 30})
    first = stratified_split(samples, seed=7)
    again = stratified_split(list(reversed(samples)), seed=7)  # file-system order does not matter
    other = stratified_split(samples, seed=8)
    assert {k: {s.path for s in v} for k, v in first.items()} == {k: {s.path for s in v} for k, v in again.items()}
    assert {s.path for s in first["test"]} != {s.path for s in other["test"]}


def test_stratified_split_is_per_source_and_class():
    samples = fake_samples({"anger": 20, "happiness": 20}, "a") + fake_samples({"anger": 20, "happiness": 20}, "b")
    splits = stratified_split(samples, seed=0)
    counts = Counter((s.source, s.label) for s in splits["test"])
    assert counts == {("a", "anger"): 3, ("a", "happiness"): 3, ("b", "anger"): 3, ("b", "happiness"): 3}


def test_tiny_classes_still_get_one_image_on_each_side():
    splits = stratified_split(fake_samples({"anger": 3, "pain": 2}), seed=0)
    assert Counter(s.label for s in splits["val"])["anger"] == 1
    assert Counter(s.label for s in splits["test"])["anger"] == 1
    assert Counter(s.label for s in splits["train"]) == {"anger": 1, "pain": 2}


@pytest.mark.parametrize("val, test", [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_impossible_fractions_are_refused(val, test):
    with pytest.raises(ValueError):
        stratified_split(fake_samples({"anger": 10}), val_fraction=val, test_fraction=test)


# ---------------------------------------------------------------- split.csv


def test_split_csv_round_trip_rebuilds_the_same_samples(odd_scan, tmp_path):
    splits = stratified_split(odd_scan.samples, seed=5)
    path = tmp_path / "split.csv"
    write_split_csv(splits, odd_scan.roots, path)
    header, *rows = path.read_text().splitlines()
    assert header == "split,source,path,label,sha256"
    assert len(rows) == len(odd_scan.samples)
    # Paths are stored relative to the dataset folder, so the data may move.
    assert not any(row.split(",")[2].startswith("/") for row in rows)
    assert read_split_csv(path, odd_scan.roots) == splits


def test_split_csv_follows_a_moved_dataset(odd_data, tmp_path):
    scan = scan_dataset(odd_data.root)
    splits = stratified_split(scan.samples, seed=0)
    write_split_csv(splits, scan.roots, tmp_path / "split.csv")
    moved = shutil.copytree(odd_data.root, tmp_path / "elsewhere" / "odd")
    rebuilt = read_split_csv(tmp_path / "split.csv", {"odd": str(moved)})
    for split in ("train", "val", "test"):
        assert [s.path.relative_to(moved) for s in rebuilt[split]] == \
               [s.path.relative_to(odd_data.root) for s in splits[split]]
        for sample in rebuilt[split]:
            assert hashlib.sha256(sample.path.read_bytes()).hexdigest() == sample.digest
