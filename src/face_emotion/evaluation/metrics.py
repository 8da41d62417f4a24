"""Probabilities + true labels -> the metrics dictionary written to metrics.json."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

ECE_BINS = 15


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor) -> float:
    if len(targets) == 0:
        return float("nan")
    return float(multiclass_calibration_error(probs, targets, num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1"))


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, ECE.

    ``probs`` is (N, C) with rows summing to 1; ``targets`` (N,) holds indices into ``classes``.
    The confusion matrix has true classes as rows and predicted classes as columns.
    """
    n_classes = len(classes)
    probs, targets = probs.float(), targets.long()
    if len(targets) == 0:
        raise DatasetError("no images to score")
    kw = {"num_classes": n_classes}
    # zero_division=0: a class never predicted has precision 0, not NaN, so JSON stays valid.
    precision = multiclass_precision(probs, targets, average="none", zero_division=0, **kw)
    recall = multiclass_recall(probs, targets, average="none", zero_division=0, **kw)
    f1 = multiclass_f1_score(probs, targets, average="none", zero_division=0, **kw)
    support = torch.bincount(targets, minlength=n_classes)
    present = support > 0
    return {
        "classes": list(classes),
        "n": int(len(targets)),
        "accuracy": float(multiclass_accuracy(probs, targets, average="micro", **kw)),
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
        "confusion_matrix": multiclass_confusion_matrix(probs, targets, **kw).tolist(),
        "ece": expected_calibration_error(probs, targets),
    }
