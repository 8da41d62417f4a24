"""Folder dataset -> checked, de-duplicated, labelled samples (and the splits).

A dataset is a folder with one sub-folder per class, or a folder with ``train/``, ``val/`` and
``test/`` each laid out that way. Folder names pass through the alias map. Every file is decoded
once here, so a corrupt file is named up front instead of crashing an epoch later.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from face_emotion.classes import canonical_class
from face_emotion.errors import DatasetError, DatasetNotFoundError, InvalidArgumentError, UnreadableFileError
from face_emotion.imageio import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image, is_image_path

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str  # canonical class name
    source: str  # which dataset folder it came from (for per-dataset reports)
    digest: str  # sha256 of the file bytes


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class DatasetScan:
    classes: list[str]
    samples: list[Sample]  # the usable, de-duplicated samples
    skipped: list[Skipped] = field(default_factory=list)
    skipped_folders: list[str] = field(default_factory=list)
    given_splits: dict[str, list[Sample]] | None = None  # when the folder had train/val/test
    roots: dict[str, str] = field(default_factory=dict)  # source name -> folder
    duplicates_removed: int = 0

    def counts(self, samples: Iterable[Sample] | None = None) -> dict[str, int]:
        counter = Counter(s.label for s in (self.samples if samples is None else samples))
        return {c: counter.get(c, 0) for c in self.classes}

    def summary(self) -> dict:
        return {
            "roots": self.roots,
            "classes": self.classes,
            "n_images": len(self.samples),
            "per_class": self.counts(),
            "per_source": dict(Counter(s.source for s in self.samples)),
            "n_skipped": len(self.skipped),
            "duplicates_removed": self.duplicates_removed,
            "skipped_folders": self.skipped_folders,
        }


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_layout(root: Path) -> dict[str, Path] | None:
    found = {}
    for sub in _class_dirs(root):
        split = _SPLIT_ALIASES.get(sub.name.lower())
        if split:
            found[split] = sub
    return found if {"train", "test"} <= found.keys() or {"train", "val"} <= found.keys() else None


def _check(path: Path, max_pixels: int | None, verify: bool) -> tuple[str | None, str | None]:
    """Return (digest, None) for a usable file, (None, reason) otherwise."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, UnreadableFileError.of(error).message
    if verify:
        try:
            decode_image(data, max_pixels=max_pixels)
        except ImageDecodeError as error:
            return None, str(error)
    return hashlib.sha256(data).hexdigest(), None


def _collect(folder: Path, wanted: list[str] | None, skipped_folders: list[str], skipped: list[Skipped]):
    """(path, canonical label) for every image file under the class folders of ``folder``."""
    items = []
    for class_dir in _class_dirs(folder):
        label = canonical_class(class_dir.name)
        if wanted is not None and label not in wanted:
            skipped_folders.append(str(class_dir))
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.name.startswith(".") or not path.is_file():
                continue
            if is_image_path(path):
                items.append((path, label))
            else:
                skipped.append(Skipped(str(path), f"not an image file type ({path.suffix or 'no extension'})"))
    return items


def scan_dataset(
    roots: str | Path | Iterable[str | Path],
    classes: list[str] | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    workers: int = 8,
) -> DatasetScan:
    """Scan one or more dataset folders.

    ``classes`` (canonical names) picks and orders a subset; by default every class found, sorted.
    """
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    skipped: list[Skipped] = []
    skipped_folders: list[str] = []
    entries: list[tuple[Path, str, str, str | None]] = []  # path, label, source, split
    root_names: dict[str, str] = {}
    layouts = []
    for root in roots:
        if not root.is_dir():
            raise DatasetNotFoundError(f"dataset folder {root} does not exist")
        # absolute(), not resolve(): a dataset of symlinks must keep its own paths.
        source = root.absolute().name
        while source in root_names:
            source += "_"
        root_names[source] = str(root.absolute())
        splits = _split_layout(root)
        layouts.append(splits is not None)
        if splits:
            for split, folder in splits.items():
                found = _collect(folder, classes, skipped_folders, skipped)
                entries += [(p, label, source, split) for p, label in found]
        else:
            entries += [(p, label, source, None) for p, label in _collect(root, classes, skipped_folders, skipped)]
    if any(layouts) and not all(layouts):
        raise DatasetError("mix of split (train/val/test) and plain class-folder datasets; use one layout")

    with ThreadPoolExecutor(max_workers=workers) as pool:  # decoding releases the GIL
        checks = list(pool.map(lambda e: _check(e[0], max_pixels, verify), entries))

    by_digest: dict[str, list[tuple[Path, str, str, str | None]]] = defaultdict(list)
    for entry, (digest, reason) in zip(entries, checks):
        if digest is None:
            skipped.append(Skipped(str(entry[0]), reason))
        else:
            by_digest[digest].append(entry)

    kept: list[tuple[Sample, str | None]] = []
    duplicates_removed = 0
    split_rank = {"test": 0, "val": 1, "train": 2, None: 3}
    for digest, group in by_digest.items():
        labels = sorted({label for _, label, _, _ in group})
        if len(labels) > 1:
            # The same picture cannot be two emotions; we cannot tell which label is right.
            paths = ", ".join(str(p) for p, *_ in group)
            for path, *_ in group:
                skipped.append(Skipped(str(path), f"identical file under classes {labels} ({paths}): dropped"))
            continue
        # Keep one copy; where copies sit in different given splits, the evaluation side keeps
        # it so the user's test set stays as given and nothing sits on both sides.
        group.sort(key=lambda e: (split_rank[e[3]], str(e[0])))
        path, label, source, split = group[0]
        for other in group[1:]:
            duplicates_removed += 1
            skipped.append(Skipped(str(other[0]), f"duplicate of {path}"))
        kept.append((Sample(path, label, source, digest), split))

    kept.sort(key=lambda item: str(item[0].path))
    found = sorted({s.label for s, _ in kept})
    if classes is not None:
        missing = [c for c in classes if c not in found]
        if missing:
            raise DatasetError(f"--classes names {missing}, but no images of them were found in "
                               f"{', '.join(map(str, roots))}")
        class_list = list(classes)
    else:
        class_list = found
    if not kept:
        raise DatasetError(f"no usable images found in {', '.join(map(str, roots))} (expected one folder per class)")

    given = None
    if all(layouts):
        given = {split: [s for s, sp in kept if sp == split] for split in SPLITS}
    return DatasetScan(
        classes=class_list,
        samples=[s for s, _ in kept],
        skipped=skipped,
        skipped_folders=sorted(set(skipped_folders)),
        given_splits=given,
        roots=root_names,
        duplicates_removed=duplicates_removed,
    )


def stratified_split(
    samples: list[Sample], *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[Sample]]:
    """Split per (source, class) so every dataset and class keeps its share in each split."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InvalidArgumentError("val and test fractions must be in [0, 1) and sum to less than 1")
    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.digest):  # order-independent of the file system
        groups[(sample.source, sample.label)].append(sample)
    rng = random.Random(seed)
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        n = len(group)
        n_val, n_test = round(n * val_fraction), round(n * test_fraction)
        if n >= 3:  # a class too small to round up still gets one image on each side
            n_val, n_test = max(n_val, 1 if val_fraction else 0), max(n_test, 1 if test_fraction else 0)
        splits["val"] += group[:n_val]
        splits["test"] += group[n_val:n_val + n_test]
        splits["train"] += group[n_val + n_test:]
    return splits


def write_split_csv(splits: dict[str, list[Sample]], roots: dict[str, str], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "source", "path", "label", "sha256"])
        for split in SPLITS:
            for s in splits.get(split, []):
                relative = Path(s.path).absolute().relative_to(roots[s.source]) if s.source in roots else s.path
                writer.writerow([split, s.source, str(relative), s.label, s.digest])


def read_split_csv(path: Path, roots: dict[str, str]) -> dict[str, list[Sample]]:
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            full = Path(roots.get(row["source"], "")) / row["path"]
            splits[row["split"]].append(Sample(full, row["label"], row["source"], row["sha256"]))
    return splits


def write_skipped_csv(skipped: list[Skipped], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows([s.path, s.reason] for s in skipped)
