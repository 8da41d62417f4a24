"""Run data: the split, which framings to read, and the DataModule of either crop path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from face_emotion.data.datamodule import FaceDataModule, class_weights
from face_emotion.data.face_crops import load_whole_image
from face_emotion.data.scan import DatasetScan, read_split_csv, stratified_split
from face_emotion.errors import DatasetError, InvalidArgumentError
from face_emotion.models.spec import PreprocessSpec
from face_emotion.training.config import TrainConfig


def run_splits(config: TrainConfig, scan: DatasetScan, out: Path) -> dict:
    split_csv = out / "split.csv"
    if config.resume and split_csv.is_file():
        # A resumed run must see exactly the split it started with.
        return read_split_csv(split_csv, scan.roots)
    if scan.given_splits is not None:
        splits = {k: list(v) for k, v in scan.given_splits.items()}
        carve = {"val": config.val_fraction if not splits["val"] else 0.0,
                 "test": config.test_fraction if not splits["test"] else 0.0}
        if carve["val"] or carve["test"]:
            carved = stratified_split(splits["train"], val_fraction=carve["val"], test_fraction=carve["test"],
                                      seed=config.seed)
            splits["train"] = carved["train"]
            splits["val"] = splits["val"] or carved["val"]
            splits["test"] = splits["test"] or carved["test"]
        return splits
    return stratified_split(scan.samples, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                            seed=config.seed)


def report_data(splits: dict, classes: list[str], skipped: list) -> None:
    from collections import Counter

    lines = [f"data: {sum(len(v) for v in splits.values())} images in {len(classes)} classes, "
             f"{len(skipped)} files skipped (listed in skipped.csv)"]
    for split in ("train", "val", "test"):
        counts = Counter(s.label for s in splits.get(split, []))
        sources = Counter(s.source for s in splits.get(split, []))
        per_class = ", ".join(f"{c} {counts.get(c, 0)}" for c in classes)
        lines.append(f"  {split:>5}: {len(splits.get(split, []))} images; {per_class}"
                     + (f"; per source: {dict(sorted(sources.items()))}" if len(sources) > 1 else ""))
    print("\n".join(lines), flush=True)


def _framings(config: TrainConfig) -> tuple[bool, bool]:
    """(template views, given views) that training reads."""
    if not config.detect:
        return False, True
    return config.framings in ("template", "both"), config.framings in ("given", "both")


def loss_weights(config: TrainConfig, splits: dict, classes: list[str]) -> list[float] | None:
    if config.balance not in ("loss", "sqrt"):
        return None
    return class_weights(splits["train"], classes, power=0.5 if config.balance == "sqrt" else 1.0).tolist()


def _check_splits(splits: dict) -> None:
    for split in ("train", "val"):
        if not splits[split]:
            raise DatasetError(f"the {split} split is empty: the dataset is too small to split")


def file_data(config: TrainConfig, scan: DatasetScan, splits: dict, classes: list[str], preprocess: PreprocessSpec):
    """Crops decoded per sample by DataLoader workers (one framing: the detector's, or the file)."""
    loader = load_whole_image
    if config.detect:
        from face_emotion.data.face_crops import prepare_face_crops

        # Detect once over every split; one loader serves them all (the DataModule takes one).
        everything = [sample for split_samples in splits.values() for sample in split_samples]
        _, loader, no_face = prepare_face_crops(everything, preprocess, detector=config.detector,
                                                progress=config.progress)
        scan.skipped.extend(no_face)
        splits = {name: [s for s in samples if s.digest in loader.faces] for name, samples in splits.items()}
    _check_splits(splits)
    report_data(splits, classes, scan.skipped)
    datamodule = FaceDataModule(
        splits, classes, preprocess, batch_size=config.batch_size, num_workers=config.num_workers,
        augment=config.augment, balanced_sampling=config.balance == "sampler", seed=config.seed, loader=loader,
    )
    framing = "template" if config.detect else "given"
    return datamodule, {framing: (loader, None)}, splits


def bank_data(config: TrainConfig, scan: DatasetScan, splits: dict, classes: list[str], preprocess: PreprocessSpec):
    """Every crop decoded once into a bank (both framings where asked), soft targets and teacher
    logits looked up by content hash. Returns the DataModule, a loader per framing for the final
    scoring (with the samples it can score), and the splits kept."""
    from face_emotion.data.crop_bank import build_crop_bank, read_digest_table
    from face_emotion.data.datamodule import CropBankDataModule
    from face_emotion.data.face_crops import FaceCropLoader

    template, given = _framings(config)
    everything = [sample for split_samples in splits.values() for sample in split_samples]
    bank, skipped = build_crop_bank(everything, preprocess, detect=template, given=given,
                                    detector=config.detector, progress=config.progress)
    scan.skipped.extend(skipped)
    banked = {bank.samples[i].digest for i in set(bank.sample_index.tolist())}
    splits = {name: [s for s in samples if s.digest in banked] for name, samples in splits.items()}
    _check_splits(splits)
    report_data(splits, classes, scan.skipped)
    soft = read_digest_table(config.soft_labels, classes) if config.soft_labels else None
    teacher = read_digest_table(config.distill, classes) if config.distill else None
    if teacher is not None:
        from face_emotion.data.crop_bank import lookup

        found = sum(lookup(teacher, s.digest) is not None for s in splits["train"])
        print(f"distillation: teacher logits for {found} of {len(splits['train'])} training images", flush=True)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(config.precision), torch.float32)
    datamodule = CropBankDataModule(
        bank, splits, classes, preprocess, batch_size=config.batch_size, augment=config.augment,
        zoom_out=config.zoom_out, balanced_sampling=config.balance == "sampler", soft_targets=soft,
        teacher_logits=teacher, label_smoothing=config.label_smoothing, precision_dtype=dtype, seed=config.seed,
    )
    loaders = {}
    if template:
        found = {d: f for d, f in bank.faces.items() if f is not None}
        loaders["template"] = (FaceCropLoader(found, preprocess), set(found))
    if given:
        loaders["given"] = (load_whole_image, None)
    return datamodule, loaders, splits


class BankViewLoader:
    """A sample's crop read from a bank view (its core, as the model sees it unaugmented): the
    final scoring of a run trained from a pack, which has no files to cut crops from."""

    def __init__(self, bank, kind: int) -> None:
        self.bank = bank
        side = bank.pixels.shape[1]
        core = int(round(side * bank.core_fraction))
        self.window = slice((side - core) // 2, (side - core) // 2 + core)
        owners, kinds = bank.sample_index.tolist(), bank.kind.tolist()
        self.view_of = {bank.samples[owner].digest: view
                        for view, (owner, k) in enumerate(zip(owners, kinds)) if k == kind}

    def __call__(self, sample):
        from PIL import Image

        pixels = self.bank.pixels[self.view_of[sample.digest]]
        return Image.fromarray(pixels[self.window, self.window])


def pack_data(config: TrainConfig, pack, splits: dict, classes: list[str], preprocess: PreprocessSpec):
    """The DataModule and scoring loaders of a training pack (data.pack): no files, no detection."""
    from face_emotion.data.crop_bank import GIVEN, TEMPLATE
    from face_emotion.data.datamodule import CropBankDataModule

    template, given = _framings(config)
    bank = pack.bank
    _check_splits(splits)
    report_data(splits, classes, [])
    from face_emotion.data.crop_bank import read_digest_table

    # The pack's own tables, unless a file names others (a teacher trained on this pack, say).
    soft = read_digest_table(config.soft_labels, classes) if config.soft_labels else pack.soft_labels
    teacher = read_digest_table(config.distill, classes) if config.distill else pack.teacher_logits
    if teacher:
        from face_emotion.data.crop_bank import lookup

        found = sum(lookup(teacher, s.digest) is not None for s in splits["train"])
        print(f"distillation: teacher logits for {found} of {len(splits['train'])} training images", flush=True)
    keep = np.ones(len(bank.kind), bool)
    if not template:
        keep &= bank.kind != TEMPLATE
    if not given:
        keep &= bank.kind != GIVEN
    if not keep.all():
        from face_emotion.data.crop_bank import CropBank

        bank = CropBank(bank.pixels[keep], bank.sample_index[keep], bank.kind[keep], bank.core_fraction,
                        bank.samples, {})
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(config.precision), torch.float32)
    datamodule = CropBankDataModule(
        bank, splits, classes, preprocess, batch_size=config.batch_size, augment=config.augment,
        zoom_out=config.zoom_out, balanced_sampling=config.balance == "sampler", soft_targets=soft or None,
        teacher_logits=teacher or None, label_smoothing=config.label_smoothing, precision_dtype=dtype,
        seed=config.seed,
    )
    banked = {bank.samples[i].digest for i in set(bank.sample_index.tolist())}
    splits = {name: [s for s in samples if s.digest in banked] for name, samples in splits.items()}
    loaders = {}
    if template:
        view_loader = BankViewLoader(bank, TEMPLATE)
        loaders["template"] = (view_loader, set(view_loader.view_of))
    if given:
        loaders["given"] = (BankViewLoader(bank, GIVEN), None)
    return datamodule, loaders, splits


def _side_of(path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as image:  # the header only
            return image.size
    except OSError:
        return None


def write_training_pack(config: TrainConfig, path: str | Path, *, quality: int = 65, given_quality: int = 80) -> dict:
    """Scan, split, detect and decode as `train` does, then write it all into one pack file
    (data.pack) that `train --bank` reads on any machine. Returns the pack's header."""
    from face_emotion.data.crop_bank import DEFAULT_CONTEXT, CropBank, build_crop_bank, read_digest_table
    from face_emotion.data.pack import pack_side, write_pack
    from face_emotion.data.scan import scan_dataset

    scan = scan_dataset(config.data_dirs, config.classes)
    classes = scan.classes
    splits = run_splits(config, scan, Path(config.out_dir))
    preprocess = PreprocessSpec(image_size=config.image_size, color_mode=config.color_mode,
                                face_margin=config.face_margin, face_align=config.face_align,
                                face_resolution=config.face_resolution)
    detail = int(preprocess.face_resolution or preprocess.image_size)
    side = pack_side(detail, config.zoom_out)
    template, given = _framings(config)
    if detail % 8:
        raise InvalidArgumentError(f"a pack stores crops at the detail level ({detail} px), "
                                   "which must be a multiple of 8")
    everything = [sample for split_samples in splits.values() for sample in split_samples]
    # Built with training's usual context (the same cache as `train`), then cut to the pack's side.
    context = max(DEFAULT_CONTEXT, (side / detail - 1.0) / 2.0)
    bank, skipped = build_crop_bank(everything, preprocess, detect=template, given=given, detector=config.detector,
                                    context=context, progress=config.progress)
    wide = bank.pixels.shape[1]
    if wide != side:
        at = (wide - side) // 2
        bank = CropBank(bank.pixels[:, at : at + side, at : at + side], bank.sample_index, bank.kind,
                        detail / side, bank.samples, bank.faces)
    banked = {bank.samples[i].digest for i in set(bank.sample_index.tolist())}
    splits = {name: [s for s in samples if s.digest in banked] for name, samples in splits.items()}
    report_data(splits, classes, scan.skipped + skipped)
    soft = read_digest_table(config.soft_labels, classes) if config.soft_labels else None
    teacher = read_digest_table(config.distill, classes) if config.distill else None
    meta = {"preprocess": {k: getattr(preprocess, k) for k in ("image_size", "color_mode", "face_margin", "face_align",
                                                               "face_resolution")},
            "framings": config.framings if config.detect else "given", "data": scan.summary(),
            "soft_labels": Path(config.soft_labels).name if config.soft_labels else None,
            "teacher_logits": Path(config.distill).name if config.distill else None}
    # A file that is its own given core (a 48 px crop at a 48 px detail level) keeps one image:
    # its template view is cut again from it on reading.
    rebuild = {}
    for sample in bank.samples:
        face = bank.faces.get(sample.digest)
        if face is not None and given and _side_of(sample.path) == (detail, detail):
            rebuild[sample.digest] = face
    write_pack(path, bank, splits, classes, soft_labels=soft, teacher_logits=teacher, meta=meta, quality=quality,
               given_quality=given_quality, rebuild=rebuild)
    return meta | {"splits": {k: len(v) for k, v in splits.items()}, "bytes": Path(path).stat().st_size}
