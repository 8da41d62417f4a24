"""Build the default model's training folders from ../shared/data, as symlinks (no copies).

- fer2013-ferplus: FER2013 train relabelled by the FER+ majority of ten annotators
  (ferplus-train-votes.csv). Files whose top vote is shared by two emotions, goes to
  unknown / not-a-face, or is contempt (not one of our classes), are left out. The folder labels
  agree with the majority for only 63 % of files; the majority is the cleaner target.
- lfw-expressions: real camera photos, as they are (contempt left out).
- affectnet96-agree: AffectNet96's folder labels are model-made; only images whose second label
  agrees (labels.csv), which DATA.md calls the more trustworthy subset, without contempt.

    python scripts/prepare_default_data.py ~/.cache/face-data ~/.cache/face-emotion/data
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path


def link_affectnet_agreeing(source: Path, target: Path) -> Counter:
    counts: Counter = Counter()
    with open(source / "labels.csv", newline="") as handle:  # CRLF line ends: csv handles them
        for row in csv.DictReader(handle):
            folder, second = row["folder_label"].strip(), (row.get("csv_label") or "").strip()
            if folder != second or folder == "contempt":
                continue
            src = source / row["path"].strip()
            dst = target / folder / src.name
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


def link_ferplus_majority(source: Path, votes_csv: Path, target: Path) -> Counter:
    counts: Counter = Counter()
    with open(votes_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            label = ferplus_majority(row) if row["match"] != "dropped_by_ferplus" else None
            counts[label or "(left out)"] += 1
            if label is None:
                continue
            src = source / row["path"]
            dst = target / label / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src.resolve())
    return counts


def link_folder(source: Path, target: Path, leave_out: tuple[str, ...]) -> Counter:
    counts: Counter = Counter()
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and p.name not in leave_out):
        for src in sorted(folder.iterdir()):
            dst = target / folder.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src.resolve())
            counts[folder.name] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("unpacked", type=Path, help="folder holding fer2013-train/, lfw-expressions/, affectnet96-dev/")
    parser.add_argument("out", type=Path)
    parser.add_argument("--votes", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ferplus-train-votes.csv")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fer = link_ferplus_majority(args.unpacked / "fer2013-train", args.votes, args.out / "fer2013-ferplus")
    print(f"fer2013-ferplus: {dict(sorted(fer.items()))}")
    lfw = link_folder(args.unpacked / "lfw-expressions", args.out / "lfw-expressions", leave_out=("contempt",))
    print(f"lfw-expressions: {sum(lfw.values())} images {dict(sorted(lfw.items()))}")
    counts = link_affectnet_agreeing(args.unpacked / "affectnet96-dev", args.out / "affectnet96-agree")
    print(f"affectnet96-agree: {sum(counts.values())} images {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
