"""Per-file answers -> per-class figures, and their noise by resampling the files (bootstrap).

A figure measured on a few hundred files moves by a point or more when other files of the same
kind are drawn; a model is only worse than another where the gap is larger than that. Answers
are class indices, -1 for a file whose face was not found (a wrong answer for its class).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NEGATIVE_CLASSES = ("anger", "disgust", "fear", "sadness")


def class_figures(
    answers: np.ndarray, targets: np.ndarray, classes: Sequence[str], focus: Sequence[str] = NEGATIVE_CLASSES
) -> dict[str, float]:
    """Accuracy, recall of each ``focus`` class and macro-F1 over the focus classes present.

    F1 is taken in the full confusion (every class the model may answer, and misses), so
    answering anger for a sad face lowers anger's precision and sadness's recall alike.
    """
    answers, targets = np.asarray(answers), np.asarray(targets)
    out: dict[str, float] = {"accuracy": float(np.mean(answers == targets)) if len(targets) else float("nan")}
    f1s = []
    for name in focus:
        if name not in classes:
            continue
        c = list(classes).index(name)
        true, said = targets == c, answers == c
        hits = int(np.sum(true & said))
        support = int(np.sum(true))
        out[f"recall {name}"] = hits / support if support else float("nan")
        out[f"n {name}"] = support
        if support:
            f1s.append(2 * hits / (support + int(np.sum(said))))
    out["negative macro-F1"] = float(np.mean(f1s)) if f1s else float("nan")
    return out


def bootstrap_std(
    answers: Sequence[np.ndarray],
    targets: np.ndarray,
    classes: Sequence[str],
    *,
    focus: Sequence[str] = NEGATIVE_CLASSES,
    rounds: int = 500,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Standard deviation of every :func:`class_figures` figure over ``rounds`` resamples of the
    files (drawn with replacement), for each model's answers; the last entry holds the std of
    each later model's figure minus the first's on the same resamples (the paired noise).

    Returns one dict per model in ``answers``, then one per later model (differences).
    """
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    n = len(targets)
    draws: list[list[dict[str, float]]] = [[] for _ in answers]
    for _ in range(rounds):
        pick = rng.integers(0, n, n)
        for i, a in enumerate(answers):
            draws[i].append(class_figures(np.asarray(a)[pick], targets[pick], classes, focus))
    keys = [k for k in draws[0][0] if not k.startswith("n ")]

    def std(rows: list[dict[str, float]]) -> dict[str, float]:
        return {
            k: float(np.nanstd([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows) else float("nan")
            for k in keys
        }

    spreads = [std(rows) for rows in draws]
    for later in draws[1:]:
        spreads.append(std([{k: b[k] - a[k] for k in keys} for a, b in zip(draws[0], later)]))
    return spreads
