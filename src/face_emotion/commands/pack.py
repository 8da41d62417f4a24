"""`face-emotion pack`."""

from __future__ import annotations

import click


@click.command()
@click.argument("data_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Pack file to write (.npz).")
@click.option("--classes", help="Comma-separated classes to use, in this order (aliases allowed).")
@click.option("--init", help="The model the pack is for ('bundled', a run folder or a model file): its crop geometry.")
@click.option("--image-size", type=int, help="[default: the --init model's, else 224]")
@click.option("--color-mode", type=click.Choice(["rgb", "grayscale"]), help="[default: the --init model's, else rgb]")
@click.option("--face-resolution", type=int, help="Detail level of the stored crops [default: the --init model's].")
@click.option("--framings", type=click.Choice(["both", "template", "given"]), default="both", show_default=True)
@click.option(
    "--zoom-out", type=float, default=1.2, show_default=True, help="Context stored for zoom-out augmentation."
)
@click.option(
    "--soft-labels", type=click.Path(exists=True, dir_okay=False), help="CSV of class distributions per file."
)
@click.option("--distill", type=click.Path(exists=True, dir_okay=False), help="CSV of a teacher's logits per file.")
@click.option("--val-fraction", type=float)
@click.option("--test-fraction", type=float)
@click.option("--seed", type=int)
@click.option("--detect/--no-detect", default=True, help="--no-detect: the images are face crops already.")
@click.option("--detector", help="Face detector name (default: the package default).")
@click.option(
    "--quality",
    type=click.IntRange(30, 100),
    default=65,
    show_default=True,
    help="JPEG quality of the template views (the detector's crops).",
)
@click.option(
    "--given-quality",
    type=click.IntRange(30, 100),
    default=80,
    show_default=True,
    help="WebP quality of the given views (the files as they are).",
)
@click.option("--no-progress", is_flag=True)
def pack(data_dirs, out_file, classes, no_progress, quality, given_quality, **options) -> None:
    """Write the crops of DATA_DIRS (both framings), labels, split, soft labels and teacher logits
    into one file that `train --bank FILE` reads on any machine, without the data or a detector."""
    from pathlib import Path

    from face_emotion.errors import require_extra

    require_extra("train", "pack", ("torch", "pytorch_lightning"))
    from face_emotion.classes import parse_class_list
    from face_emotion.training.config import TrainConfig
    from face_emotion.training.data import write_training_pack

    given = {k: v for k, v in options.items() if v is not None}
    config = TrainConfig(
        data_dirs=list(data_dirs),
        out_dir=str(Path(out_file).parent),
        classes=parse_class_list(classes) if classes else None,
        progress=not no_progress,
        **given,
    )
    made = write_training_pack(config, out_file, quality=quality, given_quality=given_quality)
    click.echo(f"pack written to {out_file}: {made['bytes'] / 1e6:.1f} MB, splits {made['splits']}")
