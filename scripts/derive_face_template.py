"""Derive the canonical five-point face template (faces/crop.py ``FACE_TEMPLATE``) from real photos.

For each image the largest CenterFace face is taken; its five landmarks are expressed in units of
the box's longer side with the box centre as origin, and the median over all faces is printed.
The median keeps turned heads and mis-detections from pulling the template.

    python scripts/derive_face_template.py ~/.cache/face-data/lfw-expressions --limit 2000
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from face_emotion.faces import create_detector
from face_emotion.imageio import load_image

NAMES = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    random.Random(0).shuffle(files)
    detector = create_detector("centerface")
    points = []
    for path in files[: args.limit]:
        faces = detector.detect(load_image(path))
        if not faces or not faces[0].landmarks:
            continue
        x, y, w, h = faces[0].box_xywh
        side, cx, cy = max(w, h), x + w / 2, y + h / 2
        points.append([((faces[0].landmarks[n][0] - cx) / side, (faces[0].landmarks[n][1] - cy) / side) for n in NAMES])
    median = np.median(np.asarray(points), axis=0)
    # Mirror-symmetric and level: a flipped training crop must be a valid crop, and the template
    # must not carry the sample's average head tilt. Each point is averaged with its mirror partner.
    mirror = median[[1, 0, 2, 4, 3]] * np.array([-1.0, 1.0])
    template = (median + mirror) / 2.0
    print(f"{len(points)} faces")
    for name, (u, v) in zip(NAMES, template):
        print(f'    "{name}": ({u:+.4f}, {v:+.4f}),')


if __name__ == "__main__":
    main()
