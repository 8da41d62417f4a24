"""Encoded images made on the spot: plain ones, a photo with a face, and hand-built PNGs."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    """``image`` saved as ``fmt`` ("PNG", "JPEG", ...) in memory."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def solid_image_bytes(size: tuple[int, int] = (40, 30), colour=(200, 120, 90), fmt: str = "PNG") -> bytes:
    """A one-colour image of ``size`` (width, height), encoded."""
    return encode(Image.new("RGB", size, colour), fmt)


def photo(side: int = 256) -> Image.Image:
    """A photo with one face (skimage's astronaut) when scikit-image is there, else noise; side x side."""
    try:
        from skimage import data as skimage_data

        image = Image.fromarray(skimage_data.astronaut())
    except ImportError:
        import numpy as np

        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8))
    return image.resize((side, side))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, extra=b"") -> bytes:
    """A PNG written chunk by chunk: any header, even one no encoder would write."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def png_bomb(side: int = 30_000) -> bytes:
    """~110 kB of PNG that inflates to side x side one-bit pixels (112 MB of IDAT for 30000)."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + the pixels of one row
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
