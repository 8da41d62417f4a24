"""Build the default model's training folders from ../shared/data, as symlinks (no copies).

- fer2013-ferplus: FER2013 train relabelled by the FER+ majority of ten annotators
  (ferplus-train-votes.csv). Files whose top vote is shared by two emotions, goes to
  unknown / not-a-face, or is contempt (not one of our classes), are left out. The folder labels
  agree with the majority for only 63 % of files; the majority is the cleaner target.
- lfw-expressions: real camera photos, as they are (contempt left out).
- affectnet96-agree: AffectNet96's folder labels are model-made; only images whose second label
  agrees (labels.csv), which DATA.md calls the more trustworthy subset, without contempt.

    python scripts/prepare_default_data.py ~/.cache/face-data ~/.cache/face-emotion/data \
        [--holdout ../shared/gpu-check/teacher-logits.csv]

--holdout: files on the GPU check's check split (never trained on by the GPU-check models) go to
each set's test/ folder, the rest to train/, so a model that starts from or distils those models
is tested on images none of them saw. It also writes ferplus-soft-labels.csv: the FER+ vote
distribution of every FER2013 file by content hash, for `train --soft-labels`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from collections import Counter
from pathlib import Path

SEVEN = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def place(dst: Path, src: Path, held_out: set[str] | None) -> Path:
    """dst, moved under test/ or train/ when a holdout list is given."""
    if held_out is None:
        return dst
    split = "test" if digest(src)[:12] in held_out else "train"
    return dst.parent.parent / split / dst.parent.name / dst.name


def link_affectnet_agreeing(source: Path, target: Path, held_out: set[str] | None = None) -> Counter:
    counts: Counter = Counter()
    with open(source / "labels.csv", newline="") as handle:  # CRLF line ends: csv handles them
        for row in csv.DictReader(handle):
            folder, second = row["folder_label"].strip(), (row.get("csv_label") or "").strip()
            if folder != second or folder == "contempt":
                continue
            src = source / row["path"].strip()
            dst = place(target / folder / src.name, src, held_out)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src.resolve())
            counts[folder] += 1
    return counts


FERPLUS_EMOTIONS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


def ferplus_majority(votes: dict[str, str]) -> str | None:
    """The FER+ majority emotion of one row, or None when there is no clear single one."""
    counts = {name: int(votes[name] or 0) for name in FERPLUS_EMOTIONS + ("unknown", "NF")}
    top = max(counts.values())
    winners = [name for name, n in counts.items() if n == top]
    if top == 0 or len(winners) != 1 or winners[0] in ("unknown", "NF", "contempt"):
        return None
    return winners[0]


def write_soft_labels(source: Path, votes_csv: Path, out_csv: Path) -> int:
    """FER+ vote distributions over the seven classes, keyed by the file's content hash."""
    names = {"anger": "anger", "disgust": "disgust", "fear": "fear", "happiness": "happiness",
             "sadness": "sadness", "surprise": "surprise", "neutral": "neutral"}
    rows = 0
    with open(votes_csv, newline="") as handle, open(out_csv, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["sha256_prefix", *SEVEN])
        for row in csv.DictReader(handle):
            votes = [int(row[names[c]] or 0) for c in SEVEN]
            if row["match"] == "dropped_by_ferplus" or sum(votes) == 0:
                continue
            writer.writerow([digest(source / row["path"])[:12], *(v / sum(votes) for v in votes)])
            rows += 1
    return rows


def link_ferplus_majority(source: Path, votes_csv: Path, target: Path, held_out: set[str] | None = None) -> Counter:
    counts: Counter = Counter()
    with open(votes_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            label = ferplus_majority(row) if row["match"] != "dropped_by_ferplus" else None
            counts[label or "(left out)"] += 1
            if label is None:
                continue
            src = source / row["path"]
            dst = place(target / label / src.name, src, held_out)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src.resolve())
    return counts


def link_folder(source: Path, target: Path, leave_out: tuple[str, ...], held_out: set[str] | None = None) -> Counter:
    counts: Counter = Counter()
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and p.name not in leave_out):
        for src in sorted(folder.iterdir()):
            dst = place(target / folder.name / src.name, src, held_out)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src.resolve())
            counts[folder.name] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("unpacked", type=Path, help="folder holding fer2013-train/, lfw-expressions/, affectnet96-dev/")
    parser.add_argument("out", type=Path)
    parser.add_argument("--votes", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/ferplus-train-votes.csv")
    parser.add_argument("--holdout", type=Path,
                        help="teacher-logits.csv of the GPU check: its check split becomes test/")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    held_out = None
    if args.holdout:
        with open(args.holdout, newline="") as handle:
            held_out = {r["sha256_prefix"] for r in csv.DictReader(handle) if r["check_split"] != "train"}
        print(f"holdout: {len(held_out)} files of the check split go to test/")
    fer = link_ferplus_majority(args.unpacked / "fer2013-train", args.votes, args.out / "fer2013-ferplus", held_out)
    print(f"fer2013-ferplus: {dict(sorted(fer.items()))}")
    soft = write_soft_labels(args.unpacked / "fer2013-train", args.votes, args.out / "ferplus-soft-labels.csv")
    print(f"ferplus-soft-labels.csv: {soft} files")
    lfw = link_folder(args.unpacked / "lfw-expressions", args.out / "lfw-expressions", ("contempt",), held_out)
    print(f"lfw-expressions: {sum(lfw.values())} images {dict(sorted(lfw.items()))}")
    counts = link_affectnet_agreeing(args.unpacked / "affectnet96-dev", args.out / "affectnet96-agree", held_out)
    print(f"affectnet96-agree: {sum(counts.values())} images {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
