"""`face-emotion evaluate`: score a model on a folder dataset, on the classes both know."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from face_emotion.data.datamodule import ImageLoader, load_whole_image
from face_emotion.data.scan import scan_dataset
from face_emotion.evaluation.metrics import classification_metrics, expected_calibration_error
from face_emotion.evaluation.scoring import collect_logits, per_source_metrics
from face_emotion.models.store import load_model


def evaluate_folder(
    model_path: str | Path,
    data_dir: str | Path,
    *,
    detect: bool = False,
    detector: str | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
) -> dict:
    """Metrics of the model at ``model_path`` on ``data_dir`` (its test/ split if it has one).

    Only classes the model and the data share (after alias mapping) are scored, and the model's
    probabilities are renormalised over them, so a 7-class model can be scored on 6-class data.
    """
    network, spec = load_model(model_path)
    scan = scan_dataset(data_dir)
    samples = scan.given_splits["test"] or scan.samples if scan.given_splits else scan.samples
    shared = [c for c in spec.classes if c in scan.classes]
    if not shared:
        raise ValueError(
            f"the model knows {list(spec.classes)} but {data_dir} has {scan.classes}: no class in common"
        )
    unknown = Counter(s.label for s in samples if s.label not in shared)
    samples = [s for s in samples if s.label in shared]
    loader: ImageLoader = load_whole_image
    if detect:
        from face_emotion.data.face_crops import prepare_face_crops

        samples, loader, no_face = prepare_face_crops(
            samples, detector=detector, margin=spec.preprocess.face_margin, progress=progress
        )
        scan.skipped.extend(no_face)
    logits, targets = collect_logits(
        network, samples, shared, spec.preprocess, batch_size=batch_size, num_workers=num_workers,
        loader=loader, progress=progress,
    )
    columns = torch.tensor([spec.classes.index(c) for c in shared])
    logits = logits[:, columns] / spec.temperature
    probs = torch.softmax(logits, dim=1)
    metrics = classification_metrics(probs, targets, shared)
    metrics["ece_before_temperature"] = expected_calibration_error(
        torch.softmax(logits * spec.temperature, dim=1), targets
    )
    per_source = per_source_metrics(probs, targets, samples, shared)
    if per_source:
        metrics["per_source"] = per_source
    metrics["n_images"] = len(samples)
    metrics["model_classes"] = list(spec.classes)
    metrics["skipped"] = [s.to_dict() for s in scan.skipped]
    metrics["skipped_classes"] = {
        label: {"images": n, "reason": "class not known to the model"} for label, n in sorted(unknown.items())
    }
    return metrics
