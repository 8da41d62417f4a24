"""`face-emotion train`."""

from __future__ import annotations

import click

from face_emotion.commands.common import fail as _fail, parse_devices


@click.command()
@click.argument("data_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--classes", help="Comma-separated classes to use, in this order (aliases allowed).")
@click.option("--arch", default="resnet50", show_default=True, help="resnet50, resnet18 or efficientnet_lite0.")
@click.option("--weights", default="imagenet", show_default=True, help="imagenet, none, or a local weights file.")
@click.option("--image-size", default=224, show_default=True, type=int, help="Model input size in pixels.")
@click.option("--color-mode", type=click.Choice(["rgb", "grayscale"]), default="rgb", show_default=True)
@click.option("--dropout", default=0.5, show_default=True, type=float)
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--weight-decay", default=1e-4, show_default=True, type=float)
@click.option("--label-smoothing", default=0.0, show_default=True, type=float)
@click.option("--balance", type=click.Choice(["none", "loss", "sampler"]), default="none", show_default=True,
              help="Against class imbalance: class-weighted loss or balanced sampling.")
@click.option("--augment", type=click.Choice(["default", "light", "none"]), default="default", show_default=True)
@click.option("--head-epochs", default=0, show_default=True, type=int, help="Train only the head first for N epochs.")
@click.option("--patience", default=6, show_default=True, type=int, help="Early stopping on validation macro-F1.")
@click.option("--val-fraction", default=0.15, show_default=True, type=float)
@click.option("--test-fraction", default=0.15, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--devices", default="auto", show_default=True, help="Number of devices (2 on CPU runs DDP/gloo).")
@click.option("--accelerator", default="auto", show_default=True, help="auto, cpu, gpu ...")
@click.option("--num-nodes", default=1, show_default=True, type=int)
@click.option("--precision", default="32-true", show_default=True, help="32-true, 16-mixed, bf16-mixed ...")
@click.option("--workers", "num_workers", default=0, show_default=True, type=int, help="Data-loading processes.")
@click.option("--resume", is_flag=True, help="Continue from RUN/checkpoints/last.ckpt with the same split.")
@click.option("--max-minutes", "max_time_minutes", type=float, help="Stop training after this many minutes.")
@click.option("--face-margin", default=0.25, show_default=True, type=float, help="Margin around detected faces.")
@click.option("--name", default="face-emotion", show_default=True, help="Model name written into the model file.")
@click.option("--detect/--no-detect", default=True, show_default=True,
              help="Detect and crop faces first (photos); --no-detect: the images are face crops already.")
@click.option("--detector", help="Face detector name (default: the package default).")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def train(data_dirs, out_dir, classes, devices, no_progress, **options) -> None:
    """Train on DATA_DIRS (folder per class, or train/ val/ test/ folders) and write a run folder."""
    from face_emotion.classes import parse_class_list
    from face_emotion.models.backbones import WeightsUnavailableError
    from face_emotion.training.run import TrainConfig, run_training

    try:
        config = TrainConfig(
            data_dirs=list(data_dirs), out_dir=out_dir,
            classes=parse_class_list(classes) if classes else None,
            devices=parse_devices(devices), progress=not no_progress, **options,
        )
        result = run_training(config)
    except (WeightsUnavailableError, ValueError, FileNotFoundError) as error:
        _fail(str(error))
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
