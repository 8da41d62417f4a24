"""Does `train --init bundled` beat ImageNet initialisation on a small dataset with a new class?

Builds a small dataset from AffectNet96 (../shared/data): `contempt` is the new class (no
face-emotion model has seen it) beside anger, happiness and sadness, taken only from images the
bundled model was never trained on (those whose two AffectNet labels disagree; the folder label is
used). 40 training images per class (20 validation, 60 test), as a user with a small labelled set
would have. Then trains the same recipe twice - ImageNet EfficientNet-Lite0 vs --init bundled -
and prints both test scores. Labels of this pool are noisy; both arms see the same files.

    python scripts/init_experiment.py ~/.cache/face-data/affectnet96-dev /tmp/init-exp
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
from pathlib import Path

CLASSES = {"anger": "anger", "happy": "happiness", "sad": "sadness", "contempt": "contempt"}
COUNTS = {"train": 40, "val": 20, "test": 60}


def build(affectnet: Path, out: Path, seed: int = 0) -> None:
    pools: dict[str, list[Path]] = {c: [] for c in CLASSES}
    with open(affectnet / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            folder, second = row["folder_label"].strip(), (row.get("csv_label") or "").strip()
            # Never trained on: every contempt image, and the others only where the labels disagree.
            if folder in pools and (folder == "contempt" or (second and second != folder)):
                pools[folder].append(affectnet / row["path"].strip())
    rng = random.Random(seed)
    for folder, files in pools.items():
        rng.shuffle(files)
        start = 0
        for split, n in COUNTS.items():
            for src in files[start : start + n]:
                dst = out / "data" / split / CLASSES[folder] / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.symlink_to(src.resolve())
            start += n


def train(out: Path, name: str, extra: list[str]) -> dict:
    run = out / name
    command = [sys.executable, "-c", "from face_emotion.cli import main; main()", "train", str(out / "data"),
               "--out", str(run), "--arch", "efficientnet_lite0", "--image-size", "80", "--color-mode", "grayscale",
               "--epochs", "12", "--patience", "12", "--batch-size", "16", "--lr", "5e-4", "--no-progress", *extra]
    subprocess.run(command, check=True)
    return json.loads((run / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("affectnet", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    build(args.affectnet, args.out)
    results = {"imagenet": train(args.out, "imagenet", ["--weights", "imagenet"]),
               "init-bundled": train(args.out, "init-bundled", ["--init", "bundled"])}
    print("| start | test accuracy | macro-F1 | contempt recall (new class) |")
    print("|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['per_class']['contempt']['recall']:.3f} |")


if __name__ == "__main__":
    main()
