"""Teacher logits of one or more models over a training pack, for `train --bank PACK --distill CSV`.

Each sample's template view (the detector's crop; the file as given where no face was found),
mirror-averaged, on the GPU when there is one. With several models, or --with-pack, the mean of
the logits (the pack's own teacher rows where it has them).

    python scripts/pack_logits.py PACK OUT.csv --model runs/teacher [--model ...] [--with-pack]
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import torch

from face_emotion.data.augment import AugmentSettings, normalise, sample_crops
from face_emotion.data.crop_bank import TEMPLATE
from face_emotion.data.pack import read_pack
from face_emotion.models.store import load_model


@torch.no_grad()
def pack_logits(pack, model: str, device: torch.device, batch: int = 1024) -> np.ndarray:
    network, spec = load_model(model, device=device)
    pre = spec.preprocess
    bank = pack.bank
    chosen: dict[int, int] = {}  # sample -> view: the template view wins
    for view, (owner, kind) in enumerate(zip(bank.sample_index.tolist(), bank.kind.tolist())):
        if owner not in chosen or kind == TEMPLATE:
            chosen[owner] = view
    owners = sorted(chosen)
    views = torch.tensor([chosen[o] for o in owners])
    pixels = torch.from_numpy(bank.pixels)
    out = np.zeros((len(bank.samples), len(spec.classes)), np.float32)
    none = AugmentSettings.named("none")
    for start in range(0, len(views), batch):
        chunk = pixels[views[start : start + batch]].to(device)
        images = sample_crops(chunk, int(pre.image_size), bank.core_fraction, none)
        images = normalise(images, pre.mean, pre.std, pre.color_mode == "grayscale")
        logits = (network(images) + network(images.flip(-1))) / 2
        out[owners[start : start + batch]] = logits.float().cpu().numpy()
    order = [list(spec.classes).index(c) for c in pack.classes]
    return out[:, order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pack")
    parser.add_argument("out")
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--with-pack", action="store_true", help="average with the pack's own teacher logits")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pack = read_pack(args.pack)
    tables = [pack_logits(pack, m, device) for m in args.model]
    mean = np.mean(tables, axis=0)
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sha256_prefix", *pack.classes])
        for i, sample in enumerate(pack.bank.samples):
            row = mean[i]
            own = pack.teacher_logits.get(sample.digest) if args.with_pack else None
            if own is not None:
                row = (row * len(tables) + own) / (len(tables) + 1)
            writer.writerow([sample.digest[:12], *(f"{v:.4f}" for v in row)])
    print(f"teacher logits of {len(pack.bank.samples)} samples written to {args.out}")


if __name__ == "__main__":
    main()
