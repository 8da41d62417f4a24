"""`face-emotion evaluate`: score a model on a folder dataset, on the classes both know."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from face_emotion.data.scan import scan_dataset
from face_emotion.errors import DatasetError
from face_emotion.evaluation.scoring import metrics_from_scores, score_samples
from face_emotion.models.spec import TRAIN_DIGEST_CHARS


def evaluate_folder(
    model_path: str | Path | None,
    data_dir: str | Path,
    *,
    detect: bool = False,
    detector: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
    tta: bool = False,
) -> dict:
    """Metrics of the model at ``model_path`` (.safetensors, .onnx, int8 .onnx, a run folder; None: the bundled one)
    on ``data_dir`` (its test/ split if it has one).

    Only classes the model and the data share (after alias mapping) are scored, and the model's
    probabilities are renormalised over them, so a 7-class model can be scored on 6-class data.
    Through detection, files without a face count as wrong answers and are listed. ``tta``: scores
    the mirror-averaged probabilities that `predict --tta` and `serve --tta` give.
    """
    from face_emotion.inference.predictor import WHOLE_IMAGE, Predictor

    predictor = Predictor.load(model_path, detector=WHOLE_IMAGE, tta=tta)
    spec = predictor.spec
    scan = scan_dataset(data_dir)
    samples = scan.given_splits["test"] or scan.samples if scan.given_splits else scan.samples
    shared = [c for c in spec.classes if c in scan.classes]
    if not shared:
        raise DatasetError(
            f"the model knows {list(spec.classes)} but {data_dir} has {scan.classes}: no class in common"
        )
    unknown = Counter(s.label for s in samples if s.label not in shared)
    samples = [s for s in samples if s.label in shared]
    seen = _training_images(spec, samples)
    scored = score_samples(predictor, samples, shared, detect=detect, detector=detector,
                           batch_size=batch_size, progress=progress)
    metrics = metrics_from_scores(scored, shared, spec.classes, spec.temperature)
    metrics["n_images"] = len(samples)
    metrics["model_classes"] = list(spec.classes)
    # The model's classes this folder has no images of: the scores are those of a choice among the
    # shared classes (probabilities renormalised over them), not among all the model's.
    metrics["unscored_model_classes"] = [c for c in spec.classes if c not in shared]
    metrics["model_training_images"] = seen
    metrics["skipped"] = [s.to_dict() for s in scan.skipped]
    metrics["skipped_classes"] = {
        label: {"images": n, "reason": "class not known to the model"} for label, n in sorted(unknown.items())
    }
    return metrics


def _training_images(spec, samples) -> int:
    """How many of ``samples`` the model was trained on (by content hash), when it knows."""
    packed = spec.training.get("train_sha256_prefixes") or ""
    width = TRAIN_DIGEST_CHARS
    digests = {packed[i : i + width] for i in range(0, len(packed), width)}
    return sum(1 for s in samples if s.digest[:width] in digests)
