"""The one scoring path: a model, through any inference backend, over labelled samples.

`train` (validation and test splits), `evaluate` and the packaging script all score here, with
the Predictor's own eval transform and backend, so a .safetensors, .onnx or int8 file is scored
the same way and by the same code that serves it.

Through detection, an image where no face is found is a miss: it stays in the denominator,
counts as wrong for its class (a "no face" column in the confusion matrix) and is listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from face_emotion.data.scan import Sample
from face_emotion.evaluation.metrics import classification_metrics, expected_calibration_error
from face_emotion.inference.backends import softmax

if TYPE_CHECKING:
    from PIL import Image

    from face_emotion.inference.predictor import Predictor

NO_FACE = "(no face)"


@dataclass
class Scored:
    """Raw model outputs over samples, before any temperature or class selection."""

    logits: np.ndarray  # (N, model classes) float32, rows in the order of `samples`
    targets: np.ndarray  # (N,) int64 indices into the scored classes
    samples: list[Sample]
    missed: list[Sample] = field(default_factory=list)  # no face found (or unreadable): wrong answers
    missed_targets: list[int] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # missed path -> why

    def subset(self, keep: Callable[[Sample], bool]) -> "Scored":
        rows = [i for i, s in enumerate(self.samples) if keep(s)]
        lost = [i for i, s in enumerate(self.missed) if keep(s)]
        return Scored(
            self.logits[rows], self.targets[rows], [self.samples[i] for i in rows],
            [self.missed[i] for i in lost], [self.missed_targets[i] for i in lost],
            {str(self.missed[i].path): self.reasons.get(str(self.missed[i].path), "") for i in lost},
        )


def collect_logits(
    predictor: "Predictor",
    samples: list[Sample],
    classes: list[str],
    *,
    loader: Callable[[Sample], "Image.Image"],
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, model classes), targets (N,) into ``classes``) of face crops, in order.

    ``loader`` gives each sample's face crop (a cached detector crop, or the whole file for
    datasets of crops); the Predictor's eval transform and backend do the rest.
    """
    index = {name: i for i, name in enumerate(classes)}
    rows: list[np.ndarray] = []
    chunks = range(0, len(samples), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="scoring", unit="batch", leave=False)
    for start in chunks:
        chunk = samples[start : start + batch_size]
        rows.append(predictor.logits([loader(s) for s in chunk]))
    n_out = len(predictor.classes)
    logits = np.concatenate(rows).astype(np.float32) if rows else np.empty((0, n_out), dtype=np.float32)
    targets = np.array([index[s.label] for s in samples], dtype=np.int64)
    return logits, targets


def score_samples(
    predictor: "Predictor",
    samples: list[Sample],
    classes: list[str],
    *,
    detect: bool,
    detector: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Scored:
    """Run the model over ``samples`` (labels in ``classes``), detecting faces first if asked.

    detect=True: the largest face of each file, cut with the model's own crop geometry
    (data.face_crops, cached); files without a face become misses. detect=False: each file is
    a face crop already.
    """
    from face_emotion.data.face_crops import load_whole_image

    loader, missed, reasons = load_whole_image, [], {}
    if detect:
        from face_emotion.data.face_crops import prepare_face_crops

        found, loader, skipped = prepare_face_crops(
            samples, predictor.spec.preprocess, detector=detector, progress=progress
        )
        kept = {s.digest for s in found}
        missed = [s for s in samples if s.digest not in kept]
        reasons = {item.path: item.reason for item in skipped}
        samples = found
    logits, targets = collect_logits(predictor, samples, classes, loader=loader, batch_size=batch_size,
                                     progress=progress)
    index = {name: i for i, name in enumerate(classes)}
    return Scored(logits, targets, samples, missed, [index[s.label] for s in missed],
                  {str(s.path): reasons.get(str(s.path), "no face found") for s in missed})


def metrics_from_scores(
    scored: Scored, classes: list[str], model_classes: tuple[str, ...] | list[str], temperature: float,
    *, per_source: bool = True,
) -> dict:
    """Accuracy, macro-F1, per class and per source, ECE before/after temperature, misses.

    Only ``classes`` (which must all be model classes) are scored: the model's probabilities are
    renormalised over them, so a 7-class model can be scored on 6-class data.
    """
    columns = [list(model_classes).index(c) for c in classes]
    logits = np.asarray(scored.logits, dtype=np.float32).reshape(-1, len(model_classes))[:, columns]
    probs = softmax(logits, temperature)
    targets = np.asarray(scored.targets, dtype=np.int64)
    n_missed = len(scored.missed_targets)
    if n_missed:
        # A miss is a confident answer "no face": wrong for its class, in its own column.
        miss_rows = np.zeros((n_missed, len(classes) + 1))
        miss_rows[:, -1] = 1.0
        all_probs = np.concatenate([np.pad(probs, ((0, 0), (0, 1))), miss_rows])
        all_targets = np.concatenate([targets, np.asarray(scored.missed_targets, dtype=np.int64)])
        metrics = classification_metrics(all_probs, all_targets, [*classes, NO_FACE])
        metrics["per_class"].pop(NO_FACE)
        metrics["classes"] = list(classes)
        metrics["confusion_matrix"] = metrics["confusion_matrix"][: len(classes)]
        metrics["confusion_columns"] = [*classes, NO_FACE]
        # Calibration speaks of the answers the model gave, i.e. of the faces it saw.
        metrics["ece"] = expected_calibration_error(probs, targets) if len(targets) else float("nan")
    else:
        metrics = classification_metrics(probs, targets, classes)
    metrics["ece_before_temperature"] = (expected_calibration_error(softmax(logits), targets) if len(targets)
                                         else float("nan"))
    metrics["no_face"] = {"images": n_missed,
                          "files": [{"path": str(m.path), "reason": scored.reasons.get(str(m.path), "")}
                                    for m in scored.missed]}
    sources = sorted({s.source for s in scored.samples} | {s.source for s in scored.missed})
    if per_source and len(sources) > 1:
        metrics["per_source"] = {
            source: metrics_from_scores(scored.subset(lambda s, wanted=source: s.source == wanted), classes,
                                        model_classes, temperature, per_source=False)
            for source in sources
        }
    return metrics
