"""Probabilities + true labels -> the metrics dictionary written to metrics.json.

NumPy only: `evaluate` is part of the base install, which has no torch. Array-likes are taken as
they come (a CPU torch tensor converts through ``np.asarray``).
"""

from __future__ import annotations

import numpy as np

from face_emotion.errors import DatasetError

ECE_BINS = 15


def expected_calibration_error(probs, targets, n_bins: int = ECE_BINS) -> float:
    """Top-1 expected calibration error, L1 over ``n_bins`` equal-width confidence bins.

    A confidence on a bin's upper edge belongs to the next bin (and 1.0 to a bin of its own), as in
    torchmetrics' ``multiclass_calibration_error``, so figures stay comparable with earlier runs.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return float("nan")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges, confidence, side="right") - 1
    count = np.bincount(index, minlength=n_bins + 1)
    used = count > 0
    mean_conf = np.bincount(index, weights=confidence, minlength=n_bins + 1)[used] / count[used]
    mean_acc = np.bincount(index, weights=correct, minlength=n_bins + 1)[used] / count[used]
    return float(np.sum(np.abs(mean_acc - mean_conf) * count[used] / len(targets)))


def confusion_matrix(predicted, targets, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, true classes as rows and predicted classes as columns."""
    flat = np.asarray(targets, dtype=np.int64) * n_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(probs, targets, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, ECE.

    ``probs`` is (N, C) with rows summing to 1; ``targets`` (N,) holds indices into ``classes``.
    The confusion matrix has true classes as rows and predicted classes as columns.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        raise DatasetError("no images to score")
    matrix = confusion_matrix(probs.argmax(axis=1), targets, len(classes))
    hits = np.diag(matrix).astype(np.float64)
    support, answered = matrix.sum(axis=1), matrix.sum(axis=0)
    # A class never predicted (or never present) has precision (recall) 0, not NaN, so JSON stays valid.
    precision = np.divide(hits, answered, out=np.zeros_like(hits), where=answered > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    present = support > 0
    return {
        "classes": list(classes),
        "n": int(len(targets)),
        "accuracy": float(hits.sum() / len(targets)),
        # Macro over classes present in the data: an absent class would score 0 and say nothing.
        "macro_f1": float(f1[present].mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
        "ece": expected_calibration_error(probs, targets),
    }
