"""Score several models on the same files of a run's split, in both framings, per source.

--unseen-by MODEL (repeatable) keeps only the files none of those models was trained on (model
files list their training images by hash), so a model is never scored on its own training data.

    python scripts/compare_models.py runs/default-v3 --split test --unseen-by OLD.safetensors \
        --unseen-by runs/default-v3 --model v3=runs/default-v3 --model v2=OLD.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from face_emotion.data.scan import read_split_csv
from face_emotion.evaluation.scoring import metrics_from_scores, score_samples
from face_emotion.inference.predictor import WHOLE_IMAGE, Predictor
from face_emotion.models.spec import TRAIN_DIGEST_CHARS
from face_emotion.models.store import read_spec


def trained_on(model: str) -> set[str]:
    digests = read_spec(model).training.get("train_sha256_prefixes", "")
    return {digests[i : i + TRAIN_DIGEST_CHARS] for i in range(0, len(digests), TRAIN_DIGEST_CHARS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder whose split.csv names the files")
    parser.add_argument("--split", default="test")
    parser.add_argument("--unseen-by", action="append", default=[], metavar="MODEL")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=MODEL")
    parser.add_argument("--tta", action="store_true", help="also score each model mirror-averaged (a NAME +mirror row)")
    args = parser.parse_args()

    spec = read_spec(args.run)
    samples = read_split_csv(args.run / "split.csv", spec.data["roots"])[args.split]
    seen = set().union(*(trained_on(m) for m in args.unseen_by)) if args.unseen_by else set()
    samples = [s for s in samples if s.digest[:TRAIN_DIGEST_CHARS] not in seen]
    print(f"{len(samples)} {args.split} files" + (" that none of the --unseen-by models trained on" if seen else ""))
    header = None
    models = [item.partition("=")[::2] for item in args.model]
    runs = [(name, path, False) for name, path in models]
    if args.tta:
        runs += [(f"{name} +mirror", path, True) for name, path in models]
    for name, path, tta in runs:
        predictor = Predictor.load(path, detector=WHOLE_IMAGE, tta=tta)
        classes = list(predictor.classes)
        row = {}
        for detect, framing in ((True, "detected"), (False, "as given")):
            scored = score_samples(predictor, samples, classes, detect=detect, batch_size=256)
            metrics = metrics_from_scores(scored, classes, predictor.classes, predictor.spec.temperature)
            row[f"all {framing}"] = metrics["accuracy"]
            for source, m in metrics.get("per_source", {}).items():
                row[f"{source} {framing}"] = m["accuracy"]
        if header is None:
            header = list(row)
            print("| model | " + " | ".join(header) + " |")
            print("|---" * (len(header) + 1) + "|")
        print(f"| {name} | " + " | ".join(f"{row.get(k, float('nan')):.3f}" for k in header) + " |", flush=True)


if __name__ == "__main__":
    main()
