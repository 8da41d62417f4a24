"""Odd image files and a Kaggle-layout dataset full of them, built in a temp folder.

Every builder returns the encoded bytes of one file and draws known pixel content, so a test can
check what the decoder made of it (a red corner that must move under EXIF rotation, a transparent
half that must come out white, a 16-bit grey that must not be clipped to white). A ``seed``
perturbs a few pixels so that files built for a dataset are never byte-identical by accident.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from support.images import encode, png_chunk

RED = (220, 30, 30)
BLUE = (30, 40, 200)
GREEN = (20, 200, 40)
WHITE = (255, 255, 255)

# (width, height) of the stored pixels of every builder below, before any EXIF rotation.
SIZE = (48, 32)


def _speckle(array: np.ndarray, seed: int) -> np.ndarray:
    """Change a few pixels along the bottom row so that different seeds give different bytes."""
    if seed:
        rng = np.random.default_rng(seed)
        array = array.copy()
        n = array.shape[1]
        columns = rng.choice(n, size=min(6, n), replace=False)
        array[-1, columns] = rng.integers(0, 256, size=(len(columns),) + array.shape[2:], dtype=np.uint8)
    return array


def corner_rgb(seed: int = 0, size: tuple[int, int] = SIZE) -> Image.Image:
    """Blue image with a red 12 x 12 block in the top-left corner (as stored)."""
    width, height = size
    array = np.empty((height, width, 3), dtype=np.uint8)
    array[:] = BLUE
    array[:12, :12] = RED
    return Image.fromarray(_speckle(array, seed), mode="RGB")


def noise_rgb(seed: int = 0, size: tuple[int, int] = SIZE) -> Image.Image:
    rng = np.random.default_rng(1000 + seed)
    width, height = size
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), mode="RGB")


def halves_rgb(left, right, seed: int = 0, size: tuple[int, int] = SIZE) -> Image.Image:
    width, height = size
    array = np.empty((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = left
    array[:, width // 2:] = right
    return Image.fromarray(_speckle(array, seed), mode="RGB")


# ---------------------------------------------------------------- one file each, as bytes


def exif_rotated_jpeg(seed: int = 0) -> bytes:
    """A JPEG whose stored pixels have the red block top-left, with EXIF Orientation = 6.

    Orientation 6 means "rotate 90 degrees clockwise to display": the upright image is
    SIZE[1] wide and SIZE[0] high, with the red block in its top-right corner.
    """
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(corner_rgb(seed), "JPEG", quality=95, exif=exif.tobytes())


def plain_jpeg(seed: int = 0) -> bytes:
    return encode(corner_rgb(seed), "JPEG", quality=95)


def grayscale_jpeg(seed: int = 0) -> bytes:
    """Mode L: left half dark (40), right half light (200)."""
    width, height = SIZE
    array = np.full((height, width), 40, dtype=np.uint8)
    array[:, width // 2:] = 200
    return encode(Image.fromarray(_speckle(array, seed), mode="L"), "JPEG", quality=95)


def palette_png_transparent(seed: int = 0) -> bytes:
    """Mode P: left half palette index 0 (black, fully transparent), right half index 1 (red)."""
    width, height = SIZE
    array = np.zeros((height, width), dtype=np.uint8)
    array[:, width // 2:] = 1
    if seed:
        array[-1, seed % width] = 2
    image = Image.fromarray(array, mode="P")
    palette = [0, 0, 0, *RED, *GREEN] + [0] * (256 * 3 - 9)
    image.putpalette(palette)
    return encode(image, "PNG", transparency=0)


def la_png(seed: int = 0) -> bytes:
    """Mode LA: left half black and fully transparent, right half black and opaque."""
    width, height = SIZE
    array = np.zeros((height, width, 2), dtype=np.uint8)
    array[:, width // 2:, 1] = 255
    if seed:
        array[-1, seed % (width // 2) + width // 2, 0] = 255
    return encode(Image.fromarray(array, mode="LA"), "PNG")


def rgba_png(seed: int = 0) -> bytes:
    """Mode RGBA: left half black and fully transparent, right half green and opaque."""
    width, height = SIZE
    array = np.zeros((height, width, 4), dtype=np.uint8)
    array[:, width // 2:] = (*GREEN, 255)
    if seed:
        array[-1, seed % (width // 2) + width // 2] = (255, 255, 255, 255)
    return encode(Image.fromarray(array, mode="RGBA"), "PNG")


def sixteen_bit_png(seed: int = 0, left: int = 64 * 257, right: int = 192 * 257) -> bytes:
    """Mode I;16 grey: left half ``left``, right half ``right`` (defaults read as 64 and 192 in 8 bit)."""
    width, height = SIZE
    array = np.full((height, width), left, dtype=np.uint16)
    array[:, width // 2:] = right
    if seed:
        array[-1, seed % width] = 1000 + seed
    image = Image.fromarray(array)
    assert image.mode == "I;16", image.mode
    return encode(image, "PNG")


def cmyk_tiff(seed: int = 0) -> bytes:
    """Mode CMYK: full cyan on the left (RGB 0,255,255), nothing (white) on the right."""
    width, height = SIZE
    array = np.zeros((height, width, 4), dtype=np.uint8)
    array[:, : width // 2, 0] = 255
    return encode(Image.fromarray(_speckle(array, seed), mode="CMYK"), "TIFF")


def animated_gif(seed: int = 0) -> bytes:
    """Two frames: red first, then blue. The first frame stands for the file."""
    first = halves_rgb(RED, RED, seed)
    second = halves_rgb(BLUE, BLUE, seed)
    return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def webp_image(seed: int = 0) -> bytes:
    return encode(corner_rgb(seed), "WEBP", lossless=True)


def bmp_image(seed: int = 0) -> bytes:
    return encode(corner_rgb(seed), "BMP")


def noise_png(seed: int = 0) -> bytes:
    return encode(noise_rgb(seed), "PNG")


def truncated_jpeg(seed: int = 0) -> bytes:
    whole = encode(noise_rgb(seed, size=(64, 64)), "JPEG", quality=90)
    return whole[: len(whole) // 2]


def garbage_bytes() -> bytes:
    return b"this is a text file, not a JPEG\n" * 4


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels but holds no pixel data at all.

    Decoding it would fail as truncated; a size check done before decoding refuses it as too large.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


# Every readable kind: name -> (builder, file extension). test_imageio walks this table.
READABLE = {
    "exif_rotated_jpg": (exif_rotated_jpeg, ".jpg"),
    "plain_jpeg": (plain_jpeg, ".jpeg"),
    "plain_jfif": (plain_jpeg, ".jfif"),
    "grayscale_jpg": (grayscale_jpeg, ".jpg"),
    "palette_png": (palette_png_transparent, ".png"),
    "la_png": (la_png, ".png"),
    "rgba_png": (rgba_png, ".png"),
    "sixteen_bit_png": (sixteen_bit_png, ".png"),
    "cmyk_tiff": (cmyk_tiff, ".tiff"),
    "animated_gif": (animated_gif, ".gif"),
    "webp": (webp_image, ".webp"),
    "bmp": (bmp_image, ".bmp"),
}


def expected_size(name: str) -> tuple[int, int]:
    """(width, height) the decoder must return for a READABLE kind."""
    return (SIZE[1], SIZE[0]) if name == "exif_rotated_jpg" else SIZE


# ---------------------------------------------------------------- a whole dataset

# Folder name as written on disk -> canonical class it must map to.
ODD_FOLDERS = {
    "Happy": "happiness",
    "angry": "anger",
    "SAD": "sadness",
    "pain": "pain",
    "Surprised": "surprise",
}


@dataclass
class OddDataset:
    root: Path
    readable: dict[Path, str] = field(default_factory=dict)  # every file that must be kept -> label
    corrupt: list[Path] = field(default_factory=list)  # image extension, unreadable content
    not_images: list[Path] = field(default_factory=list)  # files without an image extension
    hidden: list[Path] = field(default_factory=list)  # dot files: ignored silently
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)  # (kept, dropped), same class
    cross_class: list[Path] = field(default_factory=list)  # the same bytes under two classes: all dropped

    def per_class(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for label in self.readable.values():
            counts[label] = counts.get(label, 0) + 1
        return counts


def make_odd_dataset(root: Path) -> OddDataset:
    """A Kaggle-layout dataset (one folder per class, alias names in odd case) of odd files.

    Each class holds at least five readable, distinct images, so the dataset can also be split
    and trained on.
    """
    root = Path(root)
    data = OddDataset(root)
    seed = iter(range(1, 10_000))

    def put(folder: str, name: str, content: bytes, *, keep: bool = True) -> Path:
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if keep:
            data.readable[path] = ODD_FOLDERS[folder]
        return path

    put("Happy", "rotated.jpg", exif_rotated_jpeg(next(seed)))
    put("Happy", "plain.jpeg", plain_jpeg(next(seed)))
    put("Happy", "plain.jfif", plain_jpeg(next(seed)))
    put("Happy", "palette.png", palette_png_transparent(next(seed)))
    put("Happy", "UPPER.JPG", plain_jpeg(next(seed)))
    put("angry", "la.png", la_png(next(seed)))
    put("angry", "rgba.png", rgba_png(next(seed)))
    put("angry", "photo.webp", webp_image(next(seed)))
    put("angry", "photo.bmp", bmp_image(next(seed)))
    put("angry", "gray.jpg", grayscale_jpeg(next(seed)))
    put("SAD", "cmyk.tiff", cmyk_tiff(next(seed)))
    put("SAD", "deep.png", sixteen_bit_png(next(seed)))
    put("SAD", "animated.gif", animated_gif(next(seed)))
    put("SAD", "gray.jpg", grayscale_jpeg(next(seed)))
    put("SAD", "noise.png", noise_png(next(seed)))
    for i in range(5):
        put("pain", f"p{i}.png", noise_png(next(seed)))
    put("Surprised", "s0.jpg", plain_jpeg(next(seed)))
    put("Surprised", "s1.gif", animated_gif(next(seed)))
    put("Surprised", "s2.tiff", cmyk_tiff(next(seed)))
    put("Surprised", "s3.png", rgba_png(next(seed)))
    put("Surprised", "s4.webp", webp_image(next(seed)))

    # Byte-identical copies inside one class: the first path (sorted) is kept.
    original = put("pain", "dup_a.png", noise_png(next(seed)))
    copy = put("pain", "dup_b.png", original.read_bytes(), keep=False)
    data.duplicates.append((original, copy))
    original = put("Happy", "twin_1.jpg", plain_jpeg(next(seed)))
    copy = put("Happy", "twin_2.jpg", original.read_bytes(), keep=False)
    data.duplicates.append((original, copy))

    # The same picture under two emotions: nobody can tell which label is right.
    both = noise_png(next(seed))
    data.cross_class.append(put("Happy", "both.png", both, keep=False))
    data.cross_class.append(put("SAD", "both_again.png", both, keep=False))

    data.corrupt.append(put("Happy", "truncated.jpg", truncated_jpeg(next(seed)), keep=False))
    data.corrupt.append(put("angry", "not_really.jpg", garbage_bytes(), keep=False))
    data.corrupt.append(put("SAD", "empty.png", b"", keep=False))
    data.not_images.append(put("angry", "notes.txt", b"collected by hand\n", keep=False))
    data.hidden.append(put("SAD", ".DS_Store", b"\x00\x00\x00\x01Bud1", keep=False))
    return data


def copy_dataset(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
