"""`face-emotion train`."""

from __future__ import annotations

import click

from face_emotion.commands.common import help_defaults_from, parse_devices
from face_emotion.models.spec import ALIGN_MODES


@click.command()
@click.argument("data_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--classes", help="Comma-separated classes to use, in this order (aliases allowed).")
@click.option("--arch", help="resnet50, resnet18 or efficientnet_lite0 [default: the --init model's, else resnet50].")
@click.option("--weights", help="imagenet, none, or a local weights file.")
@click.option("--image-size", type=int, help="Model input size in pixels [default: the --init model's, else 224].")
@click.option("--color-mode", type=click.Choice(["rgb", "grayscale"]), help="[default: the --init model's, else rgb]")
@click.option("--dropout", type=float)
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--weight-decay", type=float)
@click.option("--label-smoothing", type=float)
@click.option("--balance", type=click.Choice(["none", "loss", "sqrt", "sampler"]),
              help="Against class imbalance: class-weighted loss (inverse frequency, or its square root: "
                   "milder, for rare classes that are also noisy) or balanced sampling.")
@click.option("--augment", type=click.Choice(["default", "light", "none"]))
@click.option("--head-epochs", type=int, help="Train only the head first for N epochs.")
@click.option("--patience", type=int, help="Early stopping on validation macro-F1.")
@click.option("--val-fraction", type=float)
@click.option("--test-fraction", type=float)
@click.option("--seed", type=int)
@click.option("--devices", help="Number of devices (2 on CPU runs DDP/gloo).")
@click.option("--accelerator", help="auto, cpu, gpu ...")
@click.option("--num-nodes", type=int)
@click.option("--precision", help="32-true, 16-mixed, bf16-mixed ... [default: bf16-mixed on a CUDA GPU, else 32-true]")
@click.option("--workers", "num_workers", type=int, help="Data-loading processes.")
@click.option("--resume", is_flag=True, help="Continue from RUN/checkpoints/last.ckpt with the same split.")
@click.option("--max-minutes", "max_time_minutes", type=float, help="Stop training after this many minutes.")
@click.option("--face-margin", type=float, help="Margin around each face, a fraction of its size per side "
                                                 "[default: the --init model's, else 0].")
@click.option("--face-align", type=click.Choice(list(ALIGN_MODES)),
              help="Crop geometry: fit the five-point face template, level the eyes, or the plain box "
                   "[default: the --init model's, else landmarks].")
@click.option("--face-resolution", type=int,
              help="Bring each crop to this many pixels a side before the model size (detail level of small "
                   "training crops) [default: the --init model's, else none].")
@click.option("--init", help="Start from a face-emotion model: 'bundled', a run folder or a model file.")
@click.option("--name", help="Model name written into the model file.")
@click.option("--detect/--no-detect", default=None,
              help="Detect and crop faces first (photos); --no-detect: the images are face crops already.")
@click.option("--detector", help="Face detector name (default: the package default).")
@click.option("--crops", type=click.Choice(["memory", "files"]),
              help="memory: decode every crop once and augment batches on the training device (fast on a GPU); "
                   "files: decode per sample.")
@click.option("--framings", type=click.Choice(["both", "template", "given"]),
              help="With detection: train on the detector's crop, the file as given (as --no-detect reads it), "
                   "or both.")
@click.option("--zoom-out", type=float, help="Augmentation may show up to this times the crop's side (--crops memory).")
@click.option("--distill", type=click.Path(exists=True, dir_okay=False),
              help="CSV of a bigger model's logits per file (sha256_prefix, then one column per class): distillation.")
@click.option("--distill-alpha", type=float, help="Weight of the distillation term.")
@click.option("--distill-temperature", type=float, help="Softening temperature of distillation.")
@click.option("--soft-labels", type=click.Path(exists=True, dir_okay=False),
              help="CSV of class distributions per file (sha256_prefix, then one column per class), "
                   "e.g. annotator votes.")
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), help="Learning-rate schedule.")
@click.option("--backbone-lr-ratio", type=float, help="The backbone's learning rate as a fraction of --lr.")
@click.option("--l2sp", type=float, help="With --init: pull the weights back towards the start's (L2-SP strength).")
@click.option("--keep-start/--no-keep-start", default=None,
              help="With --init: hand back the start if it scores higher on validation than the result.")
@click.option("--keep-classes/--no-keep-classes", default=None,
              help="With --init, when every class of the data is one the start knows: the start's other classes "
                   "stay in the model (left out of the loss).")
@click.option("--adapt", type=click.Choice(["auto", "off"]),
              help="auto: fine-tuning a face-emotion model on a small set (--init, at most 3,000 images) sets "
                   "lr 1e-3 with the backbone at x0.1, L2-SP 0.01, 20 epochs cosine in batches of 16, validation "
                   "0.2, no test split, --keep-start and --keep-classes, for the options left at their defaults; "
                   "off: plain defaults.")
@click.option("--bank", type=click.Path(exists=True, dir_okay=False),
              help="Train from a training pack (`face-emotion pack`) instead of DATA_DIRS: crops, labels, soft labels "
                   "and teacher logits in one file.")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def train(data_dirs, out_dir, classes, devices, no_progress, **options) -> None:
    """Train on DATA_DIRS (folder per class, or train/ val/ test/ folders) and write a run folder."""
    from face_emotion.errors import InvalidArgumentError, require_extra

    if not data_dirs and not options.get("bank"):
        raise InvalidArgumentError("give DATA_DIRS (folders of labelled photos) or --bank PACK")
    require_extra("train", "training", _NEEDED_BY_TRAINING)
    from face_emotion.classes import parse_class_list
    from face_emotion.training.config import TrainConfig
    from face_emotion.training.run import run_training

    given = {k: v for k, v in options.items() if v is not None}
    if devices is not None:
        given["devices"] = parse_devices(devices)
    config = TrainConfig(
        data_dirs=list(data_dirs), out_dir=out_dir,
        classes=parse_class_list(classes) if classes else None,
        progress=not no_progress, **given,
    )
    result = run_training(config)
    if result is None:  # a non-zero DDP rank: rank 0 reports
        return
    m = result.metrics
    if result.skipped:
        click.echo(f"skipped {len(result.skipped)} files (all listed in {result.out_dir / 'skipped.csv'}):", err=True)
        for item in result.skipped[:20]:
            click.echo(f"  {item.path}: {item.reason}", err=True)
        if len(result.skipped) > 20:
            click.echo(f"  ... and {len(result.skipped) - 20} more", err=True)
    click.echo(
        f"{m['split']} accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
        f"ECE {m['ece_before_temperature']:.4f} -> {m['ece']:.4f} (temperature {m['calibration']['temperature']:.3f})"
    )
    click.echo(f"model written to {result.model_path}")


# What a run needs to import. The extra's other modules are optional here: the ImageNet weights
# of efficientnet_lite0 (asked for only by --arch efficientnet_lite0 without --init, where their
# absence is its own one-line error), onnx (export only) - so a lent GPU machine with torch and
# Lightning trains from a pack with the Lite0 model code alone beside it (scripts/gpu_train.sh).
_NEEDED_BY_TRAINING = ("torch", "torchvision", "pytorch_lightning", "torchmetrics", "efficientnet_lite_pytorch",
                       "matplotlib")


def _with_defaults(command: click.Command) -> click.Command:
    # The settings' module is light (no torch), so `train --help` shows the defaults on any install.
    from face_emotion.training.config import TrainConfig

    return help_defaults_from(command, TrainConfig)


train = _with_defaults(train)
