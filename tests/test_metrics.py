"""The NumPy metrics (the base install has no torch) give torchmetrics' figures where torch is installed."""

from __future__ import annotations

import numpy as np
import pytest

from face_emotion.evaluation.metrics import classification_metrics, expected_calibration_error


def _random_case(seed: int, n: int = 400, k: int = 5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.2, 4.0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    targets = rng.integers(0, k - 1, size=n)  # the last class never occurs: zero support
    return probs, targets


def test_hand_worked_case():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    targets = np.array([0, 1, 1, 0])
    m = classification_metrics(probs, targets, ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    assert m["per_class"]["a"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["per_class"]["b"]["recall"] == 0.5 and m["per_class"]["b"]["precision"] == 1.0
    # bins: 0.9 right (bin 13), 0.8 wrong (bin 12), 0.7 right (bin 10), 0.6 right (bin 9)
    assert expected_calibration_error(probs, targets) == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchmetrics(seed):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.classification")
    probs, targets = _random_case(seed)
    p, t = torch.tensor(probs, dtype=torch.float32), torch.tensor(targets)
    m = classification_metrics(probs, targets, list("abcde"))
    assert m["accuracy"] == pytest.approx(float(tm.multiclass_accuracy(p, t, num_classes=5, average="micro")), abs=1e-6)
    f1 = tm.multiclass_f1_score(p, t, num_classes=5, average="none", zero_division=0)
    recall = tm.multiclass_recall(p, t, num_classes=5, average="none", zero_division=0)
    for i, name in enumerate("abcde"):
        assert m["per_class"][name]["f1"] == pytest.approx(float(f1[i]), abs=1e-6)
        assert m["per_class"][name]["recall"] == pytest.approx(float(recall[i]), abs=1e-6)
    assert m["confusion_matrix"] == tm.multiclass_confusion_matrix(p, t, num_classes=5).tolist()
    ece = float(tm.multiclass_calibration_error(p, t, num_classes=5, n_bins=15, norm="l1"))
    assert expected_calibration_error(probs, targets) == pytest.approx(ece, abs=1e-5)
