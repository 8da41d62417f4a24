"""Score several models on the same files of a run's split, in both framings, per source.

Accuracy per source and framing (through detection, and the file as given), then per model the
recall of anger, disgust, fear and sadness with macro-F1 over those four (the negative classes)
and accuracy, each with its noise: the standard deviation over --bootstrap resamples of the files.
Every later model is compared with the first on the same resamples: a figure that falls below the
first model's by more than the first model's noise is marked.

The files: a run folder's split (its split.csv), or --data folders with test/ sub-folders.
--photos DIR adds whole photos (read through detection only). --unseen-by MODEL (repeatable)
keeps only the files none of those models was trained on (model files list their training
images by hash), so a model is never scored on its own training data.

    python scripts/compare_models.py --data ~/.cache/face-emotion/data-v3/fer2013-ferplus \
        --data ~/.cache/face-emotion/data-v3/lfw-expressions --data ~/.cache/face-emotion/data-v3/affectnet96-agree \
        --photos ~/.cache/face-data/webphotos-dev --model v3=bundled --model v4=runs/default-v4 --json figures.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from face_emotion.data.scan import read_split_csv, scan_dataset
from face_emotion.evaluation.resample import NEGATIVE_CLASSES, bootstrap_std, class_figures
from face_emotion.evaluation.scoring import score_samples
from face_emotion.inference.predictor import WHOLE_IMAGE, Predictor
from face_emotion.models.spec import TRAIN_DIGEST_CHARS
from face_emotion.models.store import read_spec

FRAMINGS = ((True, "detected"), (False, "as given"))


def trained_on(model: str) -> set[str]:
    digests = read_spec(model).training.get("train_sha256_prefixes", "")
    return {digests[i : i + TRAIN_DIGEST_CHARS] for i in range(0, len(digests), TRAIN_DIGEST_CHARS)}


def answers_of(predictor: Predictor, samples: list, classes: list[str], detect: bool) -> np.ndarray:
    """One class index per sample, in order; -1 where no face was found."""
    scored = score_samples(predictor, samples, classes, detect=detect, batch_size=256)
    columns = [list(predictor.classes).index(c) for c in classes]
    said = {s.digest: int(i) for s, i in zip(scored.samples, np.asarray(scored.logits)[:, columns].argmax(axis=1))}
    return np.array([said.get(s.digest, -1) for s in samples], dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", help="run folder whose split.csv names the files")
    parser.add_argument(
        "--data", action="append", default=[], metavar="DIR", help="dataset folder with test/ (instead of RUN)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--photos", type=Path, help="folder of whole photos (class folders), read through detection")
    parser.add_argument("--unseen-by", action="append", default=[], metavar="MODEL")
    parser.add_argument(
        "--model", action="append", required=True, metavar="NAME=MODEL", help="MODEL: a path or 'bundled'"
    )
    parser.add_argument("--tta", action="store_true", help="also score each model mirror-averaged (a NAME +mirror row)")
    parser.add_argument("--bootstrap", type=int, default=500, help="resamples of the files for the noise (0: none)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()

    if args.data:
        samples = (scan_dataset(args.data).given_splits or {}).get(args.split, [])
    elif args.run:
        spec = read_spec(args.run)
        samples = read_split_csv(args.run / "split.csv", spec.data["roots"])[args.split]
    else:
        parser.error("give a RUN folder or --data folders")
    seen = set().union(*(trained_on(m) for m in args.unseen_by)) if args.unseen_by else set()
    samples = [s for s in samples if s.digest[:TRAIN_DIGEST_CHARS] not in seen]
    print(f"{len(samples)} {args.split} files" + (" that none of the --unseen-by models trained on" if seen else ""))
    photos = scan_dataset(args.photos).samples if args.photos else []

    models = [item.partition("=")[::2] for item in args.model]
    runs = [(name, path, False) for name, path in models]
    if args.tta:
        runs += [(f"{name} +mirror", path, True) for name, path in models]
    # (set, framing) -> the samples read that way; each model answers every one of them.
    sets: dict[tuple[str, str], list] = {}
    for _, framing in FRAMINGS:
        sets[("all", framing)] = samples
        for source in sorted({s.source for s in samples}):
            sets[(source, framing)] = [s for s in samples if s.source == source]
    if photos:
        sets[(photos[0].source, "detected")] = photos
    answers: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    classes: list[str] = []
    for name, path, tta in runs:
        predictor = Predictor.load(path, detector=WHOLE_IMAGE, tta=tta)
        classes = classes or list(predictor.classes)
        whole = {framing: answers_of(predictor, samples, classes, detect) for detect, framing in FRAMINGS}
        row = {("all", f): whole[f] for _, f in FRAMINGS}
        for (set_name, framing), chosen in sets.items():
            if set_name != "all" and chosen is not photos:
                keep = np.array([s.source == set_name for s in samples])
                row[(set_name, framing)] = whole[framing][keep]
        if photos:
            row[(photos[0].source, "detected")] = answers_of(predictor, photos, classes, True)
        answers[name] = row

    index = {c: i for i, c in enumerate(classes)}
    targets = {key: np.array([index[s.label] for s in chosen]) for key, chosen in sets.items()}
    names = [name for name, _, _ in runs]
    print("\n| model | " + " | ".join(f"{s} {f}" for s, f in sets) + " |")
    print("|---" * (len(sets) + 1) + "|")
    for name in names:
        print(
            f"| {name} | "
            + " | ".join(f"{class_figures(answers[name][k], targets[k], classes)['accuracy']:.3f}" for k in sets)
            + " |"
        )

    figures: dict = {"files": len(samples), "photos": len(photos), "bootstrap": args.bootstrap, "sets": {}}
    for key in sets:
        per_model = [answers[name][key] for name in names]
        point = [class_figures(a, targets[key], classes) for a in per_model]
        spread = bootstrap_std(per_model, targets[key], classes, rounds=args.bootstrap) if args.bootstrap else None
        entry = {"n": len(targets[key]), "models": {}}
        for i, name in enumerate(names):
            entry["models"][name] = {"figures": point[i], "std": spread[i] if spread else None}
            if i and spread:
                entry["models"][name]["minus_first_std"] = spread[len(names) + i - 1]
        figures["sets"][f"{key[0]} | {key[1]}"] = entry

    shown = [f"recall {c}" for c in NEGATIVE_CLASSES] + ["negative macro-F1", "accuracy"]
    for name in names:
        print(f"\n{name}: recall of the negative classes (n), negative macro-F1, accuracy; ± bootstrap std over files")
        print("| set | framing | files | " + " | ".join(k.replace("recall ", "") for k in shown) + " |")
        print("|---" * (len(shown) + 3) + "|")
        for label, entry in figures["sets"].items():
            m = entry["models"][name]
            cells = []
            for k in shown:
                value = m["figures"].get(k, float("nan"))
                count = m["figures"].get(k.replace("recall", "n"))
                noise = (m["std"] or {}).get(k)
                cell = (
                    "" if not np.isfinite(value) else f"{value:.3f}" + (f" ±{noise:.3f}" if noise is not None else "")
                )
                cells.append(cell + (f" ({count})" if count and k.startswith("recall") else ""))
            set_name, framing = label.split(" | ")
            print(f"| {set_name} | {framing} | {entry['n']} | " + " | ".join(cells) + " |")

    if len(names) > 1 and args.bootstrap:
        first = names[0]
        for name in names[1:]:
            print(
                f"\n{name} minus {first} (same files); noise = {first}'s bootstrap std; "
                f"paired = std of the difference over the same resamples; ** below {first} by more than its noise"
            )
            print("| set | framing | " + " | ".join(k.replace("recall ", "") for k in shown) + " |")
            print("|---" * (len(shown) + 2) + "|")
            worse = []
            for label, entry in figures["sets"].items():
                a, b = entry["models"][first], entry["models"][name]
                cells = []
                for k in shown:
                    va, vb = a["figures"].get(k, float("nan")), b["figures"].get(k, float("nan"))
                    if not (np.isfinite(va) and np.isfinite(vb)):
                        cells.append("")
                        continue
                    gap, noise, paired = vb - va, a["std"][k], b["minus_first_std"][k]
                    flag = "**" if gap < -noise else ""
                    if flag:
                        worse.append(f"{label} {k}")
                    cells.append(f"{flag}{gap:+.3f}{flag} (±{noise:.3f}, paired ±{paired:.3f})")
                set_name, framing = label.split(" | ")
                print(f"| {set_name} | {framing} | " + " | ".join(cells) + " |")
            print(f"{name}: below {first} by more than the noise on: " + ("; ".join(worse) if worse else "nothing"))
            figures.setdefault("worse_than_first", {})[name] = worse
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
