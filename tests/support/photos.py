"""Photos with real faces for comparing two implementations of the same path (server vs browser).

All made from the two real photos with people that scikit-image ships (the astronaut, the
cameraman), varied the ways user photos vary: size (enlarged before detection, shrunk for it,
shrunk by PIL's reducing gap), roll, brightness, JPEG, mirrored, several faces at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from support.clips import FACE_BOX


def _astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def _group(size: tuple[int, int], heights: list[int], seed: int) -> Image.Image:
    """Astronaut faces of these heights on a smooth background, apart, some mirrored or darker."""
    return group_with_boxes(size, heights, seed)[0]


GROUP_FIVE = ((900, 420), [230, 190, 150, 120, 90], 1)  # size, face heights, seed of "group-five.png"


def group_with_boxes(size: tuple[int, int], heights: list[int], seed: int
                     ) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """:func:`_group`'s picture and where each face was pasted (x, y, width, height), in order."""
    boxes = []
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = rng.uniform(60, 200, (6, 8, 3)).astype(np.uint8)
    canvas = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    face = _astronaut().crop(FACE_BOX)
    x = 10
    for i, h in enumerate(heights):
        piece = face.resize((round(face.width * h / face.height), h), Image.Resampling.LANCZOS)
        if i % 2:
            piece = piece.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if i % 3 == 2:
            piece = ImageEnhance.Brightness(piece).enhance(0.7)
        y = int(rng.integers(5, max(6, height - h - 5)))
        canvas.paste(piece, (x, y))
        boxes.append((x, y, piece.width, piece.height))
        x += piece.width + 15
    return canvas, boxes


def face_photos(folder: Path) -> list[Path]:
    """Writes the photos into ``folder`` and returns their paths."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    astronaut = _astronaut()
    photos = {
        "astronaut.png": astronaut,
        "astronaut-small.png": astronaut.resize((300, 300), Image.Resampling.BILINEAR),
        "astronaut-large.png": astronaut.resize((1400, 1400), Image.Resampling.BICUBIC),
        "astronaut-roll-12.png": astronaut.rotate(12, resample=Image.Resampling.BICUBIC),
        "astronaut-roll-minus-20.png": astronaut.rotate(-20, resample=Image.Resampling.BICUBIC),
        "astronaut-dark.png": ImageEnhance.Brightness(astronaut).enhance(0.6),
        "astronaut-mirrored.png": astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "face-crop-120.png": astronaut.crop(FACE_BOX).resize((100, 120), Image.Resampling.LANCZOS),
        "cameraman.png": Image.fromarray(data.camera()).convert("RGB"),
        "group-five.png": _group(*GROUP_FIVE),
        "group-wide.png": _group((1500, 500), [420, 330, 260, 210, 160, 120], seed=2),
        # Over 4x max_side: PIL shrinks by an integer factor first (reducing_gap).
        "group-huge.png": _group((4400, 1400), [1200, 1000, 800, 600], seed=3),
    }
    paths = []
    for name, image in photos.items():
        path = folder / name
        image.save(path)
        paths.append(path)
    jpeg = folder / "astronaut.jpg"
    astronaut.save(jpeg, quality=90)
    paths.append(jpeg)
    return paths
