"""model_card.md for a trained model: what it was trained on, how well it does, where it fails."""

from __future__ import annotations

from face_emotion.models.spec import ModelSpec


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f} %"


# Training settings longer than this (the packed training-image digests) are machine data: the
# card names them and says where they are instead of printing them.
_LONGEST_SHOWN = 120


def _initial_weights(training: dict) -> str:
    """What the network started from: a face-emotion model given to --init wins over --weights,
    which the backbone only used when there was no --init."""
    init = training.get("init")
    if init:
        if str(init) == "bundled":
            return "the bundled face-emotion model (--init bundled)"
        return f"the face-emotion model {init} (--init)"
    return str(training.get("weights", "n/a"))


def _training_settings(training: dict) -> str:
    shown = []
    for key, value in sorted(training.items()):
        text = str(value)
        if len(text) > _LONGEST_SHOWN:
            text = f"({len(text):,} characters, kept in the model file's description)"
        shown.append(f"{key}={text}")
    return ", ".join(shown)


# What every model card says, whoever writes the rest (a run folder's card here, the bundled
# model's in scripts/package_default_model.py).
LIMITS = (
    "Trained only on the classes listed; any face is forced into one of them.",
    "Expressions are ambiguous and labels are noisy; a prediction is an estimate of the displayed "
    "expression, not of what a person feels.",
    "Accuracy depends on face size, pose, lighting and occlusion, and may differ across age, "
    "gender and skin tone; this was not measured per group.",
)


def intended_use(extra: str = "") -> str:
    """The card's "Intended use" section; ``extra``: a sentence more (e.g. the data's terms)."""
    text = ("Research, teaching, prototypes and personal projects that estimate the displayed facial\n"
            "expression in photos or video with the consent of the people shown. Not intended for decisions\n"
            "about people (hiring, policing, insurance, health, education, border control), covert\n"
            "monitoring, or as evidence of anyone's inner emotional state.")
    return f"## Intended use\n{text}" + (f" {extra}" if extra else "")


def known_limits(extra_limits: list[str] | None = None) -> str:
    """The card's "Known limits" section: what holds for every model, then ``extra_limits``."""
    return "## Known limits\n" + "\n".join(f"- {line}" for line in (*LIMITS, *(extra_limits or [])))


def render_model_card(spec: ModelSpec, extra_limits: list[str] | None = None) -> str:
    metrics = spec.metrics.get("test", {})
    calibration = spec.metrics.get("calibration", {})
    data = spec.data
    training = spec.training
    rows = "\n".join(
        f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for name, v in metrics.get("per_class", {}).items()
    )
    per_source = "\n".join(
        f"- {source}: accuracy {_pct(m['accuracy'])}, macro-F1 {m['macro_f1']:.3f} ({m['n']} images)"
        for source, m in spec.metrics.get("test_per_source", {}).items()
    ) or "- (one data source)"
    return f"""# Model card: {spec.name}

- Architecture: {spec.architecture} (Dropout {spec.dropout} + Linear head), {len(spec.classes)} classes
- Classes: {", ".join(spec.classes)}
- Input: {spec.preprocess.image_size} x {spec.preprocess.image_size} px, {spec.preprocess.color_mode},
  mean {list(spec.preprocess.mean)}, std {list(spec.preprocess.std)}, face margin {spec.preprocess.face_margin}
- Initial weights: {_initial_weights(training)}
- Temperature (fitted on validation): {spec.temperature:.3f}

## Data
- Folders: {", ".join(f"{k} ({v})" for k, v in data.get("roots", {}).items()) or "n/a"}
- Images used: {data.get("n_images", "n/a")}; per class: {data.get("per_class", {})}
- Split sizes: {data.get("split_sizes", {})} (split.csv in the run folder rebuilds them)
- Skipped files: {data.get("n_skipped", 0)}; exact duplicates removed: {data.get("duplicates_removed", 0)}

## Results on the held-out test split
- Accuracy: {_pct(metrics.get("accuracy"))}
- Macro-F1: {metrics.get("macro_f1", float("nan")):.3f}
- Expected calibration error: {calibration.get("test_ece_before", float("nan")):.3f} before,
  {calibration.get("test_ece_after", float("nan")):.3f} after temperature scaling

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

Per data source:
{per_source}

## Training
{_training_settings(training)}

{intended_use()}

{known_limits(extra_limits)}
"""
