"""The run folder: the model file and its report, and Lightning's CSV log kept whole across a resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from face_emotion.evaluation.model_card import render_model_card
from face_emotion.evaluation.plots import plot_confusion_matrix, plot_training_curves
from face_emotion.models.spec import ModelSpec
from face_emotion.models.store import save_model


def write_run_folder(out: Path, network, spec: ModelSpec, metrics: dict) -> Path:
    """model.safetensors (+ model.json), metrics.json, the plots and the model card; returns the model path."""
    model_path = save_model(network, spec, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_confusion_matrix(metrics["confusion_matrix"], list(spec.classes), out / "confusion_matrix.png",
                          title=f"{metrics['split']} split, accuracy {metrics['accuracy']:.3f}")
    plot_training_curves(out / "logs" / "metrics.csv", out / "training_curves.png")
    (out / "model_card.md").write_text(render_model_card(spec))
    return model_path


def read_logged_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def restore_logged_history(path: Path, history: list[dict]) -> None:
    """Put the epochs logged before a resume back in front of the resumed ones.

    Lightning's CSV logger starts logs/metrics.csv afresh, which would leave the training curves
    of a resumed run without its first epochs.
    """
    new = read_logged_rows(path) if path.is_file() else []
    epochs = [int(row["epoch"]) for row in new if row.get("epoch")]
    resumed_at = min(epochs) if epochs else None
    rows = [r for r in history if resumed_at is None or (r.get("epoch") and int(r["epoch"]) < resumed_at)] + new
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
