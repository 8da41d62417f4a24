"""Package a finished training run as the bundled default model.

Writes fp16 safetensors (its header carries the model description) + model.json + MODEL_CARD.md
into src/face_emotion/weights/default/, after scoring the fp16 weights - the ones that ship - on
the run's validation and test splits, per data source and per class.

    python scripts/package_default_model.py RUN_DIR [--face-margin 0.1] [--budget "..."]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from face_emotion.data.scan import read_split_csv
from face_emotion.evaluation.metrics import classification_metrics, expected_calibration_error
from face_emotion.evaluation.scoring import collect_logits, per_source_metrics
from face_emotion.models.bundled import BUNDLED_MODEL_DIR
from face_emotion.models.store import load_model, save_model

SUMMARY_KEYS = ("accuracy", "macro_f1", "n", "ece")


def score(network, spec, samples) -> dict:
    classes = list(spec.classes)
    logits, targets = collect_logits(network, samples, classes, spec.preprocess, batch_size=256, progress=True)
    probs = torch.softmax(logits / spec.temperature, dim=1)
    metrics = classification_metrics(probs, targets, classes)
    metrics["ece_before_temperature"] = expected_calibration_error(torch.softmax(logits, 1), targets)
    metrics["per_source"] = per_source_metrics(probs, targets, samples, classes)
    return metrics


def table(metrics: dict) -> str:
    rows = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    rows += [f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
             for c, v in metrics["per_class"].items()]
    return "\n".join(rows)


def confusion(metrics: dict) -> str:
    classes = metrics["classes"]
    rows = ["| true \\ predicted | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    rows += [f"| {c} | " + " | ".join(str(n) for n in row) + " |" for c, row in zip(classes, metrics["confusion_matrix"])]
    return "\n".join(rows)


def summary_lines(name: str, metrics: dict) -> str:
    lines = [f"- {name}, all: accuracy {100 * metrics['accuracy']:.1f} %, macro-F1 {metrics['macro_f1']:.3f}, "
             f"{metrics['n']} images, ECE {metrics['ece_before_temperature']:.3f} -> {metrics['ece']:.3f}"]
    for source, m in metrics["per_source"].items():
        lines.append(f"- {name}, {source}: accuracy {100 * m['accuracy']:.1f} %, macro-F1 {m['macro_f1']:.3f}, {m['n']} images")
    return "\n".join(lines)


def model_card(spec, val: dict, test: dict, budget: str, size_mb: float, comparison: str) -> str:
    t = spec.training
    init = ("from its ImageNet weights" if t.get("weights") == "imagenet"
            else "from random initialisation: no ImageNet weights for it can be had on the training machines")
    return f"""# Bundled default model: {spec.name}

A {spec.architecture} ({init}) fine-tuned to recognise {len(spec.classes)} facial expressions:
{", ".join(spec.classes)}. `face-emotion evaluate`, `predict`, `export` and `serve` use it whenever
`--model` is not given.

## Data (non-commercial research terms)
- FER2013 training set (48x48 greyscale face crops; byte-identical duplicates removed, copies
  under two classes dropped) and AffectNet96 (96x96 colour crops) restricted to images whose two
  labels agree, `contempt` left out. Both are for **non-commercial research only**: so is this
  model. No image of either set is in this repository.
- Split 70/15/15 per data source and class (seed {t.get("seed")}); validation chose the epoch and
  fitted the temperature; test was used only for the figures below.
- No `pain` class: neither set has pain images. Train the original six classes with
  `face-emotion train` on the Kaggle folders (see the README).

## Recipe
{spec.architecture}, input {spec.preprocess.image_size} px {spec.preprocess.color_mode} (grey replicated to
three channels, so colour and greyscale sources look alike), dropout {spec.dropout}, AdamW lr {t.get("lr")},
weight decay {t.get("weight_decay")}, batch {t.get("batch_size")}, label smoothing {t.get("label_smoothing")},
ReduceLROnPlateau on validation loss, early stopping on validation macro-F1 (patience {t.get("patience")}),
augmentation: random resized crop, flip, rotation, brightness/contrast jitter, random erasing.
Epochs run: {t.get("epochs_run")}. Budget: {budget}.
Faces are cut with margin {spec.preprocess.face_margin} around the detector's box (measured: FER2013
crops sit about 0.06 and AffectNet96 about 0.15 around a CenterFace box).
Weights are stored in fp16 ({size_mb:.1f} MB); the figures below are of these fp16 weights.

{comparison}

## Validation (held out from training)
{summary_lines("validation", val)}

{table(val)}

## Test split
{summary_lines("test", test)}

{table(test)}

Confusion matrix, test split (rows: true class):

{confusion(test)}

Temperature {spec.temperature:.3f} (fitted on validation).

## Known limits
- Trained on small, low-resolution face crops (48 px FER2013, 96 px AffectNet): fine detail of
  high-resolution faces is not used.
- Mostly posed or web-sourced expressions; spontaneous, subtle and mixed expressions are harder.
- Demographic coverage of FER2013 and AffectNet is uneven (age, skin tone, gender presentation,
  cultural display rules) and accuracy per group was not measured.
- `disgust` and `fear` are the weakest classes (few and noisy examples); no `pain` class.
- Labels are noisy (FER2013) or partly model-made (AffectNet): the figures above measure agreement
  with such labels.
- CPU-only training for a short budget: far from the ~73 % that the best published single models
  reach on FER2013's public test set.

## Intended use
Research, teaching, prototypes and personal projects that estimate the displayed facial
expression in photos or video with the consent of the people shown. Not intended for decisions
about people (hiring, policing, insurance, health, education, border control), covert
monitoring, or as evidence of anyone's inner emotional state. Non-commercial use only (data terms).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL_DIR)
    parser.add_argument("--face-margin", type=float, default=None)
    parser.add_argument("--budget", default="not recorded")
    parser.add_argument("--comparison", type=Path, help="markdown file with the recipe comparison to include")
    args = parser.parse_args()

    network, spec = load_model(args.run)
    if args.face_margin is not None:
        spec = spec.replace(preprocess=dataclasses.replace(spec.preprocess, face_margin=args.face_margin))
    with tempfile.TemporaryDirectory() as tmp:  # score exactly what ships: the fp16 weights
        save_model(network, spec, tmp, dtype=torch.float16)
        network, _ = load_model(tmp)
    splits = read_split_csv(args.run / "split.csv", spec.data["roots"])
    val, test = score(network, spec, splits["val"]), score(network, spec, splits["test"])
    brief = lambda m: {k: m[k] for k in SUMMARY_KEYS} | {  # noqa: E731
        "per_source": {s: {k: v[k] for k in SUMMARY_KEYS} for s, v in m["per_source"].items()}}
    spec = spec.replace(
        name="face-emotion-default",
        metrics=spec.metrics | {"val": brief(val), "test": brief(test) | {"per_class": test["per_class"]},
                                "test_per_source": brief(test)["per_source"]},
        training=spec.training | {"budget": args.budget},
    )
    path = save_model(network, spec, args.out, dtype=torch.float16)
    size_mb = path.stat().st_size / 1e6
    (args.out / "MODEL_CARD.md").write_text(model_card(
        spec, val, test, args.budget, size_mb, args.comparison.read_text() if args.comparison else ""))
    (args.out / "metrics.json").write_text(json.dumps({"val": val, "test": test}, indent=1) + "\n")
    print(summary_lines("validation", val))
    print(summary_lines("test", test))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
