"""Bytes or files -> an upright 8-bit RGB PIL image. The first arrow of the data flow.

Every entry point (training data, evaluate, predict, the web service) decodes through
:func:`load_image` / :func:`decode_image`, so an odd file behaves the same everywhere.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from face_emotion.errors import FaceEmotionError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
DEFAULT_MAX_PIXELS = 40_000_000
# The decoders Pillow may use: the raster formats of IMAGE_EXTENSIONS (MPO, a camera's multi-picture
# JPEG, opens through "JPEG"). Pillow's other plugins (EPS hands the file to Ghostscript; FITS, DDS,
# SPIDER, ...) are rarely needed, little exercised, and would all face hostile uploads.
DECODER_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")


class ImageDecodeError(FaceEmotionError, ValueError):
    """The bytes are not an image we can read (corrupt, truncated, not an image at all)."""

    code = "invalid_image"


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels than allowed (decompression-bomb guard)."""

    code = "image_too_large"


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _to_8bit(image: Image.Image) -> Image.Image:
    # PIL's convert("RGB") on 16-bit or float images clips instead of scaling, which turns
    # most 16-bit photos white; scale by the real range instead.
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            array = array / 257.0
        else:
            lo, hi = float(array.min()), float(array.max())
            array = (array - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(array)
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    image = _to_8bit(image)
    if image.mode == "P":
        # Palette images may carry transparency; go through RGBA so it is honoured.
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        # Transparent pixels have undefined colour; put them on white, as a viewer would show them.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _open(fp, max_pixels: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(fp, formats=DECODER_FORMATS)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
                )
            # Animated GIF/WebP/TIFF: the first frame (where open() leaves it) stands for the file.
            # is_animated looks for a second frame only; n_frames would parse every frame, a second
            # of CPU for a 10 MB GIF of a million empty frames.
            if getattr(image, "is_animated", False):
                image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own guard fires in open(), before our check: quote the limit the user set, not
        # Pillow's built-in one, which they never chose and cannot find in our settings.
        found = re.search(r"\((\d+) pixels\)", str(error))
        pixels = int(found.group(1)) if found else None
        if max_pixels is not None and (pixels is None or pixels > max_pixels):
            size = f"{pixels:,} pixels" if pixels else "over the limit"
            raise ImageTooLargeError(f"image is {size}; the limit is {max_pixels:,} pixels") from None
        pixels = f"{pixels:,} pixels" if pixels else "too many pixels"
        raise ImageTooLargeError(f"image is too large to decode safely: {pixels}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as error:
        raise ImageDecodeError(f"corrupt or truncated image: {error}") from None
    except Exception as error:  # noqa: BLE001
        # Pillow's decoders meet damaged files with IndexError, TypeError, NotImplementedError,
        # AttributeError, ... (found by fuzzing); every one of them means "cannot read this file".
        raise ImageDecodeError(f"corrupt or unsupported image ({type(error).__name__}: {error})") from None


def decode_image(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes into an EXIF-upright 8-bit RGB image.

    Raises ImageDecodeError (or its subclass ImageTooLargeError) with a message fit for a user.
    """
    if not data:
        raise ImageDecodeError("empty file")
    return _open(io.BytesIO(data), max_pixels)


def load_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file into an EXIF-upright 8-bit RGB image (see :func:`decode_image`)."""
    return decode_image(Path(path).read_bytes(), max_pixels=max_pixels)
