"""Pictures for a run folder: confusion matrix and training curves (matplotlib, no display)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path, title: str = "") -> None:
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.0 + 0.75 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, f"{normalised[i, j]:.2f}\n{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                    color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title(title or "Confusion matrix (rows: true class)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_logged_metrics(metrics_csv: Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning CSVLogger rows -> {metric: [(epoch, value), ...]}."""
    series: dict[str, list[tuple[float, float]]] = {}
    if not metrics_csv.is_file():
        return series
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = row.get("epoch")
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, "") or epoch in (None, ""):
                    continue
                series.setdefault(key, []).append((float(epoch), float(value)))
    return series


def plot_training_curves(metrics_csv: Path, path: Path) -> None:
    series = read_logged_metrics(metrics_csv)
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss_epoch", "val_loss"):
        if key in series:
            x, y = zip(*series[key])
            loss_ax.plot(np.asarray(x) + 1, y, marker="o", label=key)
    for key in ("train_acc_epoch", "val_acc", "val_macro_f1"):
        if key in series:
            x, y = zip(*series[key])
            score_ax.plot(np.asarray(x) + 1, y, marker="o", label=key)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    score_ax.set(xlabel="epoch", ylabel="score", title="Accuracy and macro-F1", ylim=(0, 1))
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
