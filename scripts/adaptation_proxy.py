"""Adaptation proxy: does `train --init MODEL` on ~100 photos of a group's people pay on other
people of the same group?

The group: faces of the held-out test split (the GPU check's check split: neither the bundled
model nor its teachers trained on them) as one cheap camera takes them: dim light, a soft lens,
sensor noise and strong JPEG compression, the same for every photo (a fixed seed). The bundled
model starts weak there; a user's own camera or population is the same situation.
The people are split: an LFW file names its person (``Al_Gore_0002.jpg``) and each person's
files go to one side only; a FER2013 or AffectNet file is one face crawled from the web, so
file and person coincide. Training takes 15 photos per class (105, as a user with a hundred
photos), testing up to 45 other people per class, classes balanced like a posed set.

    python scripts/adaptation_proxy.py build ~/.cache/face-emotion/proxy       # once (seconds)
    python scripts/adaptation_proxy.py run ~/.cache/face-emotion/proxy --out runs/proxy [-- TRAIN FLAGS]

`run` scores the start on the test people, trains with `face-emotion train PROXY/train --init
MODEL` (defaults unless flags follow `--`), scores the result the same way, and prints both with
the wall time.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

DATA = Path.home() / ".cache" / "face-emotion" / "data-v3"
SOURCES = ("fer2013-ferplus", "affectnet96-agree", "lfw-expressions")
CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
SIDE = 128  # every photo the same size, as one camera gives
TRAIN_PER_CLASS, TEST_PER_CLASS = 15, 45


def camera(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The group's camera: dim (gain 0.5, gamma 1.3), soft (blur 1 px), noisy (sigma 6), JPEG 35."""
    image = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    image = image.filter(ImageFilter.GaussianBlur(1.0))
    x = np.asarray(image, np.float32) / 255.0
    x = 0.5 * x**1.3 * 255.0
    x = x + rng.normal(0.0, 6.0, x.shape)
    out = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=35)
    return Image.open(io.BytesIO(buffer.getvalue()))


def person(path: Path, source: str) -> str:
    if source.startswith("lfw"):
        return "lfw:" + re.sub(r"_\d+$", "", path.stem)
    return f"{source}:{path.stem}"


def clear_fer_faces(data: Path, agreement: float) -> set[str]:
    """Digests of FER2013 faces whose FER+ label has at least ``agreement`` of the ten votes:
    clear expressions, as a group's own labelled photos are (posed, or chosen by the user)."""
    import csv

    with open(data / "ferplus-soft-labels.csv", newline="") as handle:
        return {
            row["sha256_prefix"]
            for row in csv.DictReader(handle)
            if max(float(v) for k, v in row.items() if k != "sha256_prefix") >= agreement
        }


def build(out: Path, data: Path, seed: int, agreement: float = 0.7) -> None:
    import hashlib

    from face_emotion.classes import canonical_class

    rng = random.Random(seed)
    clear = clear_fer_faces(data, agreement)
    by_class: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for source in SOURCES:
        for folder in sorted((data / source / "test").iterdir()):
            label = canonical_class(folder.name)
            for path in sorted(folder.iterdir()):
                if source.startswith("fer") and hashlib.sha256(path.read_bytes()).hexdigest()[:12] not in clear:
                    continue
                by_class[label][person(path, source)].append(path)
    if out.exists():
        shutil.rmtree(out)
    noise = np.random.default_rng(seed)
    counts = {}
    taken: set[str] = set()
    for label in CLASSES:
        people = sorted(p for p in by_class[label] if p not in taken)
        rng.shuffle(people)
        sides: dict[str, list[Path]] = {"train": [], "test": []}
        for who in people:  # a person's files all go to the side that still needs photos
            side = "train" if len(sides["train"]) < TRAIN_PER_CLASS else "test"
            if side == "test" and len(sides["test"]) >= TEST_PER_CLASS:
                break
            sides[side] += by_class[label][who]
            taken.add(who)
        for side, paths in sides.items():
            folder = out / side / label
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths:
                with Image.open(path) as image:
                    camera(image, noise).save(folder / f"{path.stem}.jpg", quality=95)
        counts[label] = {side: len(paths) for side, paths in sides.items()}
    # A person named under two classes stays on the side of the first class that took them.
    (out / "proxy.json").write_text(json.dumps({"seed": seed, "data": str(data), "counts": counts}, indent=1))
    print(json.dumps(counts))


def score(model: str, test: Path) -> dict:
    from face_emotion.evaluation.evaluate import evaluate_folder
    metrics = evaluate_folder(model, test, detect=True)  # "bundled", a run folder or a model file
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "no_face": metrics["no_face"]["images"],
        "recall": {c: round(m["recall"], 3) for c, m in metrics["per_class"].items()},
    }


def run(proxy: Path, out: Path, model: str, flags: list[str]) -> None:
    start = score(model, proxy / "test")
    print(
        f"start {model}: accuracy {start['accuracy']:.3f}, macro-F1 {start['macro_f1']:.3f}, recall {start['recall']}",
        flush=True,
    )
    if out.exists():
        shutil.rmtree(out)
    began = time.time()
    command = [
        sys.executable,
        "-m",
        "face_emotion",
        "train",
        str(proxy / "train"),
        "--out",
        str(out),
        "--init",
        model,
        "--no-progress",
        *flags,
    ]
    subprocess.run(command, check=True)
    minutes = (time.time() - began) / 60
    result = score(str(out), proxy / "test")
    print(
        f"after train --init {model} {' '.join(flags)} ({minutes:.1f} min): accuracy {result['accuracy']:.3f} "
        f"({result['accuracy'] - start['accuracy']:+.3f}), macro-F1 {result['macro_f1']:.3f}, recall {result['recall']}"
    )
    (out / "proxy-result.json").write_text(
        json.dumps({"start": start, "result": result, "minutes": minutes, "flags": flags}, indent=1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build")
    b.add_argument("out", type=Path)
    b.add_argument("--data", type=Path, default=DATA)
    b.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("proxy", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--model", default="bundled")
    args, flags = parser.parse_known_args()
    if args.verb == "build":
        build(args.out, args.data, args.seed)
    else:
        run(args.proxy, args.out, args.model, [f for f in flags if f != "--"])


if __name__ == "__main__":
    main()
