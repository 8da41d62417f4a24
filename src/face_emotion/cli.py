"""The `face-emotion` command: a click group; each verb lives in face_emotion.commands.<verb>."""

from __future__ import annotations

import importlib
import logging
import os

import click

from face_emotion.version import __version__

# Idle OpenMP threads sleep instead of spinning. On a small shared machine (a server's workers,
# a detector and a model in one process, or anything running beside training) spinning threads
# slowed every torch call many times over; on an idle machine the cost is negligible. Must be
# set before torch is first imported, which no command does at import time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# verb -> module in face_emotion.commands holding a click command of the same name. Imported
# lazily so `face-emotion --help` does not pay for torch.
COMMANDS = {
    "train": "Train on folders of labelled photos and write a run folder.",
    "pack": "Write a training pack: crops, labels, soft labels and teacher logits in one file.",
    "evaluate": "Score a model on a labelled folder dataset.",
    "predict": "Emotions of the faces in image files or folders (text, JSON lines or CSV).",
    "watch": "Emotions of the faces in a camera or a live stream, as they happen.",
    "export": "Export a model to ONNX (fp32 or int8) and check it against PyTorch.",
    "serve": "Serve the JSON API and the web page (gunicorn).",
    "batch": "Many images (folders, lists, URIs) into Parquet, one row per face; locally or on Ray.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"face_emotion.commands.{name}")
        return getattr(module, name)

    def invoke(self, ctx):
        # The one place an expected error ends a command: its message on one line, exit status 1,
        # no traceback (`train --init missing.safetensors`, a model that will not load, ...).
        from face_emotion.errors import FaceEmotionError, missing_extra_from

        try:
            return super().invoke(ctx)
        except FaceEmotionError as error:
            raise click.ClickException(error.message) from None
        except ModuleNotFoundError as error:
            # An optional extra's library reached without an explicit check: still one line.
            missing = missing_extra_from(error)
            if missing is None:
                raise
            raise click.ClickException(missing.message) from None

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="face-emotion")
def main() -> None:
    """Facial emotion recognition: train on your own labelled photos, then evaluate, predict, serve."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
