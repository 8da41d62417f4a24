"""Tiny synthetic datasets the tests build for themselves (never real data from ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Three "emotions" a small network can tell apart from a few dozen 32 px examples: the
# orientation of a noisy stripe pattern. Folder names are deliberately aliases.
PATTERNS = {"happy": "horizontal", "Sad": "vertical", "angry": "diagonal"}


def pattern_image(kind: str, rng: np.random.Generator, size: int = 40) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(5, 9)
    phase = rng.uniform(0, 2 * np.pi)
    coordinate = {"horizontal": y, "vertical": x, "diagonal": (x + y) / np.sqrt(2)}[kind]
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * coordinate / period + phase)
    base = rng.uniform(0.2, 0.8, size=3)
    image = wave[..., None] * base[None, None, :] + rng.normal(0, 0.08, size=(size, size, 3))
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))


def make_learnable_dataset(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for folder, kind in PATTERNS.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pattern_image(kind, rng).save(root / folder / f"{i:03d}.png")
    return root
