"""`face-emotion train`: data folder(s) -> a run folder holding a self-describing model and its report."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from face_emotion.data.scan import (
    DatasetScan,
    scan_dataset,
    write_skipped_csv,
    write_split_csv,
)
from face_emotion.errors import DatasetError, InvalidArgumentError
from face_emotion.evaluation.calibration import choose_temperature
from face_emotion.models.backbones import create_network, get_backbone
from face_emotion.models.spec import TRAIN_DIGEST_CHARS, ModelSpec, PreprocessSpec
from face_emotion.models.transfer import init_from_model, with_head
from face_emotion.training.config import TrainConfig, cuda_in_use, settle_adaptation
from face_emotion.training.data import bank_data, file_data, loss_weights, pack_data, run_splits
from face_emotion.training.outputs import read_logged_rows, restore_logged_history, write_run_folder
from face_emotion.version import __version__

log = logging.getLogger(__name__)


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
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    devices = config.devices
    multi = (isinstance(devices, int) and devices > 1) or config.num_nodes > 1
    try:
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
    except (ValueError, TypeError, MisconfigurationException) as error:  # Lightning's word on a bad setting
        raise InvalidArgumentError(f"--accelerator/--devices/--num-nodes/--precision: {error}") from None


def _load_best_weights(module, checkpoint_path: str) -> None:
    # Our own checkpoint, but loaded without unpickling code all the same.
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)


def run_training(config: TrainConfig) -> TrainResult | None:
    """Train, calibrate, test and write the run folder. Returns None on non-zero DDP ranks."""
    started = time.time()
    out = Path(config.out_dir)
    _quiet_third_party()
    # A fresh head (or a whole fresh network) is drawn before the loop seeds everything: seeded
    # here, a run is the same run each time.
    torch.manual_seed(config.seed)
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
        raise DatasetError(f"need at least two classes to train, found {classes}")
    if config.init:
        if settle_adaptation(config, len(scan.samples)):
            print(f"fine-tuning {config.init} on {len(scan.samples)} images: lr {config.lr:g} "
                  f"(backbone x{config.backbone_lr_ratio:g}), L2-SP {config.l2sp:g}, {config.epochs} epochs of batches "
                  f"of {config.batch_size}, validation {config.val_fraction:g}, test {config.test_fraction:g}, "
                  f"keep the start if it is better (--adapt off: plain defaults)", flush=True)
        classes = _with_start_classes(config, classes)
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


def _with_start_classes(config: TrainConfig, classes: list[str]) -> list[str]:
    """--keep-classes: the start's classes when the data's are all among them (the others stay in
    the model, left out of the loss). A class the start does not know (pain) makes a new task,
    whose classes are the data's own."""
    if not config.keep_classes or config.classes is not None:
        return classes
    from face_emotion.models.store import read_spec

    start_classes = list(read_spec(config.init).classes)
    lacking = [c for c in start_classes if c not in classes]
    if not lacking or not set(classes) <= set(start_classes):
        return classes
    print(f"keeping the classes the data lacks: {', '.join(lacking)}", flush=True)
    return start_classes


def _open_pack(config: TrainConfig):
    """A training pack as a scan with given splits; the run's crop geometry becomes the pack's."""
    from face_emotion.data.pack import read_pack

    if config.data_dirs:
        raise InvalidArgumentError("give data folders or --bank, not both")
    pack = read_pack(config.bank)
    if config.classes and list(config.classes) != pack.classes:
        raise InvalidArgumentError(f"--classes {','.join(config.classes)}: the pack holds {','.join(pack.classes)}")
    made = pack.meta["preprocess"]
    if config.color_mode != made["color_mode"]:
        raise InvalidArgumentError(f"the pack holds {made['color_mode']} crops; this run wants {config.color_mode}")
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
    """Fit, then score validation and test through the inference path and write the run folder."""
    import pytorch_lightning as pl

    from face_emotion.training.module import EmotionClassifier

    pl.seed_everything(config.seed, workers=True, verbose=False)
    splits = run_splits(config, scan, out)
    preprocess = PreprocessSpec(
        image_size=config.image_size, color_mode=config.color_mode, mean=backbone.mean, std=backbone.std,
        face_margin=config.face_margin, face_align=config.face_align, face_resolution=config.face_resolution,
    )
    if cuda_in_use(config.accelerator):
        network = network.to(memory_format=torch.channels_last)  # faster convolutions under bf16
    if pack is not None:
        datamodule, loaders, splits = pack_data(config, pack, splits, classes, preprocess)
    else:
        make_data = bank_data if config.crops == "memory" else file_data
        datamodule, loaders, splits = make_data(config, scan, splits, classes, preprocess)
    module = EmotionClassifier(
        network, len(classes), lr=config.lr, weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing, class_weights=loss_weights(config, splits, classes),
        schedule=config.schedule, distill_alpha=config.distill_alpha, distill_temperature=config.distill_temperature,
        head_name=backbone.head_name, backbone_lr_ratio=config.backbone_lr_ratio,
        l2sp=config.l2sp if config.init else 0.0,
        trained_classes=[i for i, c in enumerate(classes) if c in scan.classes],
    )
    start_network = copy.deepcopy(network) if config.init and config.keep_start else None
    fitted = _fit(config, out, module, datamodule, backbone, scan, splits)
    if fitted is None:  # a non-zero DDP rank: rank 0 scores and writes
        return None
    epochs_run, best_val_macro_f1 = fitted
    network = module.network.cpu().eval()
    if start_network is not None:
        network = _better_of(config, start_network.cpu().eval(), network, preprocess, classes, splits, loaders)
    scores = _score(config, network, preprocess, classes, splits, loaders)
    spec = _final_spec(config, preprocess, classes, scan, splits, scores,
                       epochs_run=epochs_run, best_val_macro_f1=best_val_macro_f1, started=started)
    model_path = write_run_folder(out, network, spec, scores.metrics)
    return TrainResult(out, model_path, scores.metrics, spec, scan.skipped)


def _fit(config: TrainConfig, out: Path, module, datamodule, backbone, scan: DatasetScan,
         splits: dict) -> tuple[int, float] | None:
    """Lightning's loop with checkpoints, early stopping and --resume; the best weights end up in
    ``module``. Returns (epochs run, best validation macro-F1), or None on a non-zero DDP rank."""
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from face_emotion.training.callbacks import EpochReport, HeadFirstFinetuning

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
    log_dir = Path(trainer.logger.log_dir)
    logged = log_dir / "metrics.csv"
    history = read_logged_rows(logged) if ckpt_path and logged.is_file() else []
    if ckpt_path and log_dir.is_dir():
        # The epochs logged so far are held in `history` and put back after fit; left in place,
        # Lightning's CSV logger would delete them itself, warning that it does.
        shutil.rmtree(log_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return None
    if history:
        restore_logged_history(logged, history)
    epochs_run = trainer.current_epoch
    if stopper.stopped_epoch:
        print(f"early stopping: validation macro-F1 did not improve for {config.patience} epochs; "
              f"stopped after {epochs_run} of {config.epochs} epochs (best {float(best.best_model_score or 0):.4f})",
              flush=True)
    elif epochs_run < config.epochs:
        print(f"stopped after {epochs_run} of {config.epochs} epochs "
              f"(time limit --max-minutes {config.max_time_minutes})", flush=True)
    if best.best_model_path:
        _load_best_weights(module, best.best_model_path)
    return epochs_run, float(best.best_model_score or float("nan"))


@dataclass
class _Scores:
    metrics: dict  # the test split (or validation, without one) in the primary framing
    val_metrics: dict
    calibration: dict
    other_framings: dict  # framing -> headline figures, for the framings beside the primary one


def _better_of(config: TrainConfig, start, trained, preprocess: PreprocessSpec, classes: list[str], splits: dict,
               loaders: dict):
    """--keep-start: never hand back a model worse than the one the run started from. Both are
    scored on validation in the primary framing (macro-F1, then accuracy); a tie keeps the start."""
    from face_emotion.evaluation.scoring import Scored, collect_logits, metrics_from_scores
    from face_emotion.inference.backends import PyTorchBackend
    from face_emotion.inference.predictor import Predictor

    draft = ModelSpec(architecture=config.arch, classes=tuple(classes), preprocess=preprocess)
    loader, has_face = loaders[next(iter(loaders))]
    samples = splits["val"]
    found = samples if has_face is None else [s for s in samples if s.digest in has_face]
    missed = [] if has_face is None else [s for s in samples if s.digest not in has_face]
    index = {name: i for i, name in enumerate(classes)}

    def figures(network) -> tuple[float, float]:
        predictor = Predictor(PyTorchBackend.from_network(network, draft))
        logits, targets = collect_logits(predictor, found, classes, loader=loader,
                                         batch_size=max(config.batch_size, 64))
        m = metrics_from_scores(Scored(logits, targets, found, missed, [index[s.label] for s in missed]),
                                classes, classes, 1.0, per_source=False)
        return m["macro_f1"], m["accuracy"]

    before, after = figures(start), figures(trained)
    kept = before >= after
    config.extra["kept_start"] = kept
    if kept:
        print(f"kept the start: validation macro-F1 {before[0]:.4f} against {after[0]:.4f} after training", flush=True)
    return start if kept else trained


def _score(config: TrainConfig, network, preprocess: PreprocessSpec, classes: list[str], splits: dict,
           loaders: dict) -> _Scores:
    """Validation and test scored by the one scoring path, through an inference backend; one
    temperature fitted on validation for every framing (a user's crops may come either way)."""
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
    # One temperature for every framing: a user's crops may come either way.
    calibration = choose_temperature(np.concatenate([v.logits for v in val_scored.values()]),
                                     np.concatenate([v.targets for v in val_scored.values()]))
    temperature = calibration["temperature"]
    if calibration.get("note"):
        print(f"temperature: {calibration['note']}", flush=True)
    test_samples = splits["test"] or splits["val"]
    by_framing = {f: metrics_from_scores(score(test_samples, f), classes, classes, temperature) for f in framings}
    metrics = by_framing[framings[0]]
    metrics["split"] = "test" if splits["test"] else "val"
    metrics["framing"] = framings[0]
    calibration |= {"test_ece_before": metrics["ece_before_temperature"], "test_ece_after": metrics["ece"]}
    metrics["calibration"] = calibration
    val_metrics = metrics_from_scores(val_scored[framings[0]], classes, classes, temperature)
    headline = ("accuracy", "macro_f1", "n")
    other_framings = {
        f: {**{k: m[k] for k in headline},
            "per_source": {s: {k: v[k] for k in headline} for s, v in m.get("per_source", {}).items()}}
        for f, m in by_framing.items() if f != framings[0]
    }
    if other_framings:
        metrics["other_framings"] = other_framings
        for f, m in other_framings.items():
            print(f"{metrics['split']} ({f} framing): accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}",
                  flush=True)
    return _Scores(metrics, val_metrics, calibration, other_framings)


def _final_spec(config: TrainConfig, preprocess: PreprocessSpec, classes: list[str], scan: DatasetScan, splits: dict,
                scores: _Scores, *, epochs_run: int, best_val_macro_f1: float, started: float) -> ModelSpec:
    """The model's description: what it reads, what it was trained on and how, how well it does."""
    metrics = scores.metrics
    per_source = metrics.get("per_source", {})
    data_summary = scan.summary() | {"split_sizes": {k: len(v) for k, v in splits.items()}}
    training = {k: v for k, v in asdict(config).items() if k not in ("data_dirs", "out_dir", "extra", "progress")}
    training |= {
        "epochs_run": epochs_run, "best_val_macro_f1": best_val_macro_f1,
        "minutes": round((time.time() - started) / 60, 1), **config.extra,
    }
    return ModelSpec(
        architecture=config.arch, classes=tuple(classes), preprocess=preprocess, dropout=config.dropout,
        temperature=scores.calibration["temperature"], name=config.name, version=__version__, data=data_summary,
        metrics={"test": {k: metrics[k] for k in ("accuracy", "macro_f1", "per_class", "n")},
                 "val": {k: scores.val_metrics[k] for k in ("accuracy", "macro_f1", "n")},
                 "test_per_source": {s: {k: m[k] for k in ("accuracy", "macro_f1", "n")}
                                     for s, m in per_source.items()},
                 "test_framing": metrics["framing"], "test_other_framings": scores.other_framings,
                 "calibration": scores.calibration},
        training=training | _provenance(config, [s.digest[:TRAIN_DIGEST_CHARS] for s in splits["train"]]),
    )


def _provenance(config: TrainConfig, train_digests: list[str]) -> dict:
    """The spec's record of where the weights came from and which images they learnt from.

    A run started from another model (--init) learnt from that model's training images too: it
    inherits their digests (so `evaluate` still warns about them), and says it started from that
    model rather than from the --weights default it never used.
    """
    if not config.init:
        return {"train_sha256_prefixes": "".join(train_digests)}
    from face_emotion.models.store import read_spec

    start = read_spec(config.init)
    packed = start.training.get("train_sha256_prefixes") or ""
    width = TRAIN_DIGEST_CHARS
    inherited = [packed[i : i + width] for i in range(0, len(packed), width)]
    digests = list(dict.fromkeys(inherited + train_digests))  # once each, the start's first
    return {
        "weights": f"init: {start.name} {start.version}".strip(),
        "init_model": {"argument": str(config.init), "name": start.name, "version": start.version,
                       "architecture": start.architecture, "classes": list(start.classes),
                       "train_images": len(inherited)},
        "train_sha256_prefixes": "".join(digests),
    }
