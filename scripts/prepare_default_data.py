"""Build the default model's training folders from ../shared/data, as symlinks (no copies).

FER2013 is used as it is (the pipeline maps its folder names and drops its duplicates).
AffectNet96's folder labels are model-made; we keep only images whose second label agrees
(labels.csv), which DATA.md calls the more trustworthy subset, and leave out `contempt`.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("unpacked", type=Path, help="folder holding fer2013-train/ and affectnet96-dev/")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fer = args.out / "fer2013"
    if not fer.exists():
        fer.symlink_to((args.unpacked / "fer2013-train").resolve())
    counts = link_affectnet_agreeing(args.unpacked / "affectnet96-dev", args.out / "affectnet96-agree")
    print(f"fer2013 -> {fer.resolve()}")
    print(f"affectnet96-agree: {sum(counts.values())} images {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
