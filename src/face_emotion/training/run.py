"""`face-emotion train`: data folder(s) -> a run folder holding a self-describing model and its report."""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path

import torch

from face_emotion import __version__
from face_emotion.data.scan import (
    DatasetScan,
    scan_dataset,
    write_skipped_csv,
    write_split_csv,
)
from face_emotion.evaluation.calibration import choose_temperature
from face_emotion.models.backbones import create_network, get_backbone
from face_emotion.models.spec import TRAIN_DIGEST_CHARS, ModelSpec, PreprocessSpec
from face_emotion.models.transfer import init_from_model, with_head
from face_emotion.training.data import bank_data, file_data, loss_weights, pack_data, run_splits
from face_emotion.training.outputs import read_logged_rows, restore_logged_history, write_run_folder

log = logging.getLogger(__name__)

# Fine-tuning a face-emotion model (--init) on a small set - a user's own people, a camera -
# is another job than training on tens of thousands of faces: the start is already good, so the
# features must move slowly (a tenth of the head's learning rate, pulled back towards where they
# started by L2-SP), the few photos all train (no test split carved; validation picks the epoch)
# in small batches (steps, not epochs, are what a hundred photos lack), and the result must never
# be worse than the start on validation. These replace the options
# the user left at their defaults (scripts/adaptation_proxy.py measures them).
ADAPT_MAX_IMAGES = 3000
ADAPT_DEFAULTS = {
    "lr": 1e-3, "backbone_lr_ratio": 0.1, "l2sp": 0.01, "epochs": 20, "batch_size": 16, "patience": 100,
    "schedule": "cosine", "val_fraction": 0.2, "test_fraction": 0.0, "keep_start": True, "keep_classes": True,
}


@dataclass
class TrainConfig:
    data_dirs: list[str]
    out_dir: str
    classes: list[str] | None = None
    arch: str | None = None  # None: the --init model's architecture, else resnet50
    weights: str = "imagenet"  # "imagenet", "none" or a path
    image_size: int | None = None  # None: the --init model's, else 224
    color_mode: str | None = None  # None: the --init model's colour mode, else "rgb"
    dropout: float = 0.5
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    balance: str = "none"  # "none", "loss" (class-weighted loss), "sqrt" (weights by
    # inverse square-root frequency) or "sampler" (balanced batches)
    augment: str = "default"  # "default", "light" or "none"
    head_epochs: int = 0  # > 0: train only the head this many epochs first
    patience: int = 6  # early stopping on validation macro-F1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    devices: int | str = "auto"
    accelerator: str = "auto"
    num_nodes: int = 1
    precision: str | None = None  # None: bf16-mixed on a CUDA GPU, else 32-true
    num_workers: int = 0
    resume: bool = False
    checkpoint_minutes: float = 10.0
    max_time_minutes: float | None = None
    limit_train_batches: float | int | None = None
    progress: bool = True
    name: str = "face-emotion"
    # Crop geometry (faces.crop) and detail level (PreprocessSpec.face_resolution). None: the
    # --init model's, else margin 0, landmarks, no detail step. A model started from another must
    # see its crops cut the way it learnt them.
    face_margin: float | None = None
    face_align: str | None = None
    face_resolution: int | None = None
    # "memory": every crop decoded once into a bank held on the training device and augmented
    # there a batch at a time (data.crop_bank, training.augment); "files": decoded per sample.
    crops: str = "memory"
    # Which framings to train on when detecting: "template" (the detector's crop, as predict and
    # serve cut it), "given" (the file as it is, as --no-detect reads it) or "both". "both" is for
    # datasets of face crops, which users also hand over as they are; a whole photo is no crop.
    framings: str = "template"
    zoom_out: float = 1.15  # augmentation may show up to this times the crop's side ("memory")
    distill: str | None = None  # CSV of teacher logits by sha256 prefix (data.crop_bank.read_digest_table)
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    soft_labels: str | None = None  # CSV of per-file class distributions (e.g. annotator votes)
    schedule: str = "plateau"  # "plateau" (reduce on validation loss) or "cosine" (fixed budget)
    backbone_lr_ratio: float = 1.0  # the backbone's learning rate as a fraction of the head's
    l2sp: float = 0.0  # strength of the pull back towards the starting weights (with --init)
    keep_start: bool = False  # with --init: keep the start if it scores higher on validation
    keep_classes: bool = False  # with --init and no --classes, data of known classes only: the others stay
    adapt: str = "auto"  # "auto": ADAPT_DEFAULTS when fine-tuning a model on a small set; "off"
    init: str | None = None  # start from a face-emotion model: "bundled", a run folder or a model file
    bank: str | None = None  # a training pack (data.pack, `face-emotion pack`) instead of data_dirs
    detect: bool = True  # detect and crop faces first (uncropped photos); False: files are face crops
    detector: str | None = None  # face detector name; None: the default
    extra: dict = field(default_factory=dict)  # free-form notes written into the model description

    def __post_init__(self) -> None:
        init_spec = None
        if self.init:
            from face_emotion.models.bundled import resolve_init_argument
            from face_emotion.models.store import read_spec

            init_spec = read_spec(resolve_init_argument(self.init))
        # Everything that shapes a crop follows the model a run starts from unless given.
        if self.arch is None:
            self.arch = init_spec.architecture if init_spec else "resnet50"
        if init_spec is not None:
            pre = init_spec.preprocess
            for name in ("image_size", "color_mode", "face_margin", "face_align", "face_resolution"):
                if getattr(self, name) is None:
                    setattr(self, name, getattr(pre, name))
        fresh = PreprocessSpec()  # the one home of a fresh run's crop defaults
        for name in ("image_size", "color_mode", "face_margin", "face_align"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(fresh, name))
        if self.precision is None:
            self.precision = "bf16-mixed" if _cuda_in_use(self.accelerator) else "32-true"
        if self.crops not in ("memory", "files"):
            raise ValueError(f"crops must be memory or files, not {self.crops!r}")
        if self.framings not in ("template", "given", "both"):
            raise ValueError(f"framings must be template, given or both, not {self.framings!r}")
        if (self.distill or self.soft_labels) and self.crops != "memory":
            raise ValueError("--distill and --soft-labels need --crops memory")


def settle_adaptation(config: TrainConfig, n_images: int) -> bool:
    """Apply ADAPT_DEFAULTS to the options left at their defaults when ``config`` fine-tunes a
    face-emotion model on ``n_images`` <= ADAPT_MAX_IMAGES. Returns whether it did."""
    if config.adapt == "off" or not config.init or n_images > ADAPT_MAX_IMAGES:
        return False
    if config.adapt != "auto":
        raise ValueError(f"adapt must be auto or off, not {config.adapt!r}")
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for name, value in ADAPT_DEFAULTS.items():
        if getattr(config, name) == defaults[name]:
            setattr(config, name, value)
    return True


def _cuda_in_use(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    metrics: dict
    spec: ModelSpec
    skipped: list


def _trainer(config: TrainConfig, out: Path, callbacks: list):
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    devices = config.devices
    multi = (isinstance(devices, int) and devices > 1) or config.num_nodes > 1
    return pl.Trainer(
        default_root_dir=str(out),
        accelerator=config.accelerator,
        devices=devices,
        num_nodes=config.num_nodes,
        strategy="ddp" if multi else "auto",
        precision=config.precision,
        max_epochs=config.epochs,
        max_time=timedelta(minutes=config.max_time_minutes) if config.max_time_minutes else None,
        limit_train_batches=config.limit_train_batches,
        callbacks=callbacks,
        logger=CSVLogger(str(out), name="logs", version=""),
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        deterministic=False,
    )


def _load_best_weights(module, checkpoint_path: str) -> None:
    # Our own checkpoint, but loaded without unpickling code all the same.
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)


def run_training(config: TrainConfig) -> TrainResult | None:
    """Train, calibrate, test and write the run folder. Returns None on non-zero DDP ranks."""
    started = time.time()
    out = Path(config.out_dir)
    _quiet_third_party()
    backbone = get_backbone(config.arch)  # fail on a bad name before scanning thousands of files
    if config.bank:
        from face_emotion.data.pack import pack_header

        pack_header(config.bank)  # a wrong file fails before any weights are looked for
    # Weights before data: a missing download must fail in a second, not after a detection
    # pass over every photo, and must leave no run folder behind.
    if config.init:
        network = None  # built below, once the classes are known
    else:
        network = create_network(config.arch, 2, config.dropout, weights=config.weights)
    pack = None
    if config.bank:
        pack, scan = _open_pack(config)
    else:
        scan = scan_dataset(config.data_dirs, config.classes)
    classes = scan.classes
    if len(classes) < 2:
        raise ValueError(f"need at least two classes to train, found {classes}")
    if config.init:
        if settle_adaptation(config, len(scan.samples)):
            print(f"fine-tuning {config.init} on {len(scan.samples)} images: lr {config.lr:g} (backbone x{config.backbone_lr_ratio:g}), "
                  f"L2-SP {config.l2sp:g}, {config.epochs} epochs of batches of {config.batch_size}, validation {config.val_fraction:g}, test {config.test_fraction:g}, "
                  f"keep the start if it is better (--adapt off: plain defaults)", flush=True)
        if config.keep_classes and config.classes is None:
            from face_emotion.models.bundled import resolve_init_argument
            from face_emotion.models.store import read_spec

            start_classes = list(read_spec(resolve_init_argument(config.init)).classes)
            lacking = [c for c in start_classes if c not in classes]
            # Photos of some of the model's classes adapt it; a class it does not know (pain)
            # makes a new task, whose classes are the data's own.
            if lacking and set(classes) <= set(start_classes):
                print(f"keeping the classes the data lacks: {', '.join(lacking)}", flush=True)
                classes = start_classes
        network = init_from_model(config.init, config.arch, classes, config.dropout)
    else:
        network = with_head(network, config.arch, len(classes), config.dropout)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _train(config, out, started, backbone, scan, classes, network, pack)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing was written: leave nothing behind
        raise


class _NoAdverts(logging.Filter):
    """Drops Lightning's adverts and its GPU/TPU availability lines; keeps the rest (DDP members)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Tip:" in message or "litlogger" in message.lower() or "available:" in message)


def _quiet_third_party() -> None:
    """Keep training output to what the user needs: no adverts, no library deprecation noise."""
    import warnings

    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdverts) for f in logger.filters):
            logger.addFilter(_NoAdverts())
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")


def _open_pack(config: TrainConfig):
    """A training pack as a scan with given splits; the run's crop geometry becomes the pack's."""
    from face_emotion.data.pack import read_pack

    if config.data_dirs:
        raise ValueError("give data folders or --bank, not both")
    pack = read_pack(config.bank)
    if config.classes and list(config.classes) != pack.classes:
        raise ValueError(f"--classes {','.join(config.classes)}: the pack holds {','.join(pack.classes)}")
    made = pack.meta["preprocess"]
    if config.color_mode != made["color_mode"]:
        raise ValueError(f"the pack holds {made['color_mode']} crops; this run wants {config.color_mode}")
    for name in ("face_margin", "face_align", "face_resolution"):
        setattr(config, name, made.get(name))
    widest = pack.meta["side"] / pack.meta["core"]
    if config.zoom_out > widest:
        print(f"zoom-out {config.zoom_out:g} -> {widest:.3f}: the context the pack holds", flush=True)
        config.zoom_out = widest
    # The framings follow the pack unless asked otherwise; a pack of crops as given has no other.
    packed = pack.meta.get("framings", "both")
    if packed == "given":
        config.detect = False
    elif config.framings == TrainConfig.framings:
        config.framings = packed
    samples = [s for split in pack.splits.values() for s in split]
    scan = DatasetScan(classes=list(pack.classes), samples=samples, given_splits=pack.splits,
                       roots={}, duplicates_removed=0)
    return pack, scan


def _train(config: TrainConfig, out: Path, started: float, backbone, scan: DatasetScan, classes: list[str], network,
           pack=None):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from face_emotion.training.callbacks import EpochReport, HeadFirstFinetuning
    from face_emotion.training.module import EmotionClassifier

    pl.seed_everything(config.seed, workers=True, verbose=False)
    splits = run_splits(config, scan, out)
    preprocess = PreprocessSpec(
        image_size=config.image_size, color_mode=config.color_mode, mean=backbone.mean, std=backbone.std,
        face_margin=config.face_margin, face_align=config.face_align, face_resolution=config.face_resolution,
    )
    if _cuda_in_use(config.accelerator):
        network = network.to(memory_format=torch.channels_last)  # faster convolutions under bf16
    if pack is not None:
        datamodule, loaders, splits = pack_data(config, pack, splits, classes, preprocess)
    elif config.crops == "memory":
        datamodule, loaders, splits = bank_data(config, scan, splits, classes, preprocess)
    else:
        datamodule, loaders, splits = file_data(config, scan, splits, classes, preprocess)
    module = EmotionClassifier(
        network, len(classes), lr=config.lr, weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing, class_weights=loss_weights(config, splits, classes),
        schedule=config.schedule, distill_alpha=config.distill_alpha, distill_temperature=config.distill_temperature,
        head_name=backbone.head_name, backbone_lr_ratio=config.backbone_lr_ratio, l2sp=config.l2sp if config.init else 0.0,
        trained_classes=[i for i, c in enumerate(classes) if c in scan.classes],
    )
    start_network = copy.deepcopy(network) if config.init and config.keep_start else None

    checkpoints = out / "checkpoints"
    # `best` also writes last.ckpt after every validation; `timed` saves mid-epoch on a clock, as
    # a long CPU epoch must survive the end of a session. --resume takes the newer of the two.
    best = ModelCheckpoint(
        dirpath=checkpoints, filename="best", monitor="val_macro_f1", mode="max", save_top_k=1, save_last=True
    )
    last = ModelCheckpoint(
        dirpath=checkpoints, filename="timed", save_top_k=1, enable_version_counter=False,
        train_time_interval=timedelta(minutes=config.checkpoint_minutes),
    )
    stopper = EarlyStopping(monitor="val_macro_f1", mode="max", patience=config.patience)
    callbacks = [best, last, stopper]
    if not config.progress:
        callbacks.append(EpochReport(config.epochs))
    if config.head_epochs > 0:
        callbacks.append(HeadFirstFinetuning(backbone.head_name, config.head_epochs))
    trainer = _trainer(config, out, callbacks)
    if trainer.num_devices > 1 or trainer.num_nodes > 1:
        # Each DDP process on a CPU should use its share of the cores, not all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(trainer.num_devices, 1)))

    if trainer.is_global_zero:
        write_split_csv(splits, scan.roots, out / "split.csv")
        write_skipped_csv(scan.skipped, out / "skipped.csv")
    candidates = [p for p in (checkpoints / "last.ckpt", checkpoints / "timed.ckpt") if p.is_file()]
    ckpt_path = str(max(candidates, key=lambda p: p.stat().st_mtime)) if config.resume and candidates else None
    if config.resume and ckpt_path is None:
        log.warning("--resume: no checkpoint in %s, starting from the beginning", checkpoints)
    logged = out / "logs" / "metrics.csv"
    history = read_logged_rows(logged) if ckpt_path and logged.is_file() else []
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return None
    if history:
        restore_logged_history(logged, history)
    epochs_run = trainer.current_epoch
    if stopper.stopped_epoch:
        print(f"early stopping: validation macro-F1 did not improve for {config.patience} epochs; "
              f"stopped after {epochs_run} of {config.epochs} epochs (best {float(best.best_model_score or 0):.4f})", flush=True)
    elif epochs_run < config.epochs:
        print(f"stopped after {epochs_run} of {config.epochs} epochs (time limit --max-minutes {config.max_time_minutes})", flush=True)

    if best.best_model_path:
        _load_best_weights(module, best.best_model_path)
    network = module.network.cpu().eval()

    # Validation and test are scored by the one scoring path, through an inference backend.
    from face_emotion.evaluation.scoring import Scored, collect_logits, metrics_from_scores
    from face_emotion.inference.backends import PyTorchBackend
    from face_emotion.inference.predictor import Predictor

    draft = ModelSpec(architecture=config.arch, classes=tuple(classes), preprocess=preprocess)
    predictor = Predictor(PyTorchBackend.from_network(network, draft))
    batch = max(config.batch_size, 64)
    index = {name: i for i, name in enumerate(classes)}

    def score(samples: list, framing: str) -> Scored:
        # Through the detector a file without a face is a wrong answer, never left out.
        loader, has_face = loaders[framing]
        found = samples if has_face is None else [s for s in samples if s.digest in has_face]
        missed = [] if has_face is None else [s for s in samples if s.digest not in has_face]
        logits, targets = collect_logits(predictor, found, classes, loader=loader, batch_size=batch)
        return Scored(logits, targets, found, missed, [index[s.label] for s in missed],
                      {str(s.path): "no face found" for s in missed})

    framings = list(loaders)  # the primary framing first: the detector's crop when detecting
    val_scored = {f: score(splits["val"], f) for f in framings}
    kept_start = False
    if start_network is not None:
        # Never hand back a model worse than the one the run started from: compare both on
        # validation (macro-F1, then accuracy) in the primary framing.
        trained = metrics_from_scores(val_scored[framings[0]], classes, classes, 1.0)
        predictor = Predictor(PyTorchBackend.from_network(start_network.cpu().eval(), draft))
        start_val = {f: score(splits["val"], f) for f in framings}
        before = metrics_from_scores(start_val[framings[0]], classes, classes, 1.0)
        if (before["macro_f1"], before["accuracy"]) >= (trained["macro_f1"], trained["accuracy"]):
            kept_start, network, val_scored = True, start_network.cpu().eval(), start_val
            print(f"kept the start: validation macro-F1 {before['macro_f1']:.4f} against {trained['macro_f1']:.4f} after training", flush=True)
        else:
            predictor = Predictor(PyTorchBackend.from_network(network, draft))
    # One temperature for every framing: a user's crops may come either way.
    calibration = choose_temperature(torch.cat([v.logits for v in val_scored.values()]),
                                     torch.cat([v.targets for v in val_scored.values()]))
    temperature = calibration["temperature"]
    if calibration.get("note"):
        print(f"temperature: {calibration['note']}", flush=True)
    test_samples = splits["test"] or splits["val"]
    test_scored = {f: score(test_samples, f) for f in framings}
    by_framing = {f: metrics_from_scores(test_scored[f], classes, classes, temperature) for f in framings}
    metrics = by_framing[framings[0]]
    metrics["split"] = "test" if splits["test"] else "val"
    metrics["framing"] = framings[0]
    calibration |= {"test_ece_before": metrics["ece_before_temperature"], "test_ece_after": metrics["ece"]}
    metrics["calibration"] = calibration
    val_metrics = metrics_from_scores(val_scored[framings[0]], classes, classes, temperature)
    per_source = metrics.get("per_source", {})
    other_framings = {
        f: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n": m["n"],
            "per_source": {s: {k: v[k] for k in ("accuracy", "macro_f1", "n")} for s, v in m.get("per_source", {}).items()}}
        for f, m in by_framing.items() if f != framings[0]
    }
    if other_framings:
        metrics["other_framings"] = other_framings
        for f, m in other_framings.items():
            print(f"{metrics['split']} ({f} framing): accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}", flush=True)

    data_summary = scan.summary() | {"split_sizes": {k: len(v) for k, v in splits.items()}}
    training = {k: v for k, v in asdict(config).items() if k not in ("data_dirs", "out_dir", "extra", "progress")}
    training |= {
        "epochs_run": epochs_run, "best_val_macro_f1": float(best.best_model_score or float("nan")),
        "minutes": round((time.time() - started) / 60, 1), "kept_start": kept_start, **config.extra,
    }
    spec = ModelSpec(
        architecture=config.arch, classes=tuple(classes), preprocess=preprocess, dropout=config.dropout,
        temperature=temperature, name=config.name, version=__version__, data=data_summary,
        metrics={"test": {k: metrics[k] for k in ("accuracy", "macro_f1", "per_class", "n")},
                 "val": {k: val_metrics[k] for k in ("accuracy", "macro_f1", "n")},
                 "test_per_source": {s: {k: m[k] for k in ("accuracy", "macro_f1", "n")} for s, m in per_source.items()},
                 "test_framing": metrics["framing"], "test_other_framings": other_framings,
                 "calibration": calibration},
        training=training | {"train_sha256_prefixes": "".join(s.digest[:TRAIN_DIGEST_CHARS] for s in splits["train"])},
    )
    model_path = write_run_folder(out, network, spec, metrics)
    return TrainResult(out, model_path, metrics, spec, scan.skipped)
