"""Face box -> the square crop that the eval transform resizes for the model."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from face_emotion.faces.base import Face

# Below this roll the eyes are level for any practical purpose; skipping the resampling keeps
# the crop pixel-exact (a rotation by 0.1 degrees would only blur it).
_MIN_ROLL_DEGREES = 0.5


def crop_face(image: Image.Image, face: Face, margin: float, *, align: bool = False) -> Image.Image:
    """Square crop around ``face``: its box grown by ``margin`` x box size on every side.

    The square's side is the longer box side times (1 + 2 * margin), centred on the box, so a
    margin of 0.25 adds a quarter of the face on each side (the ModelSpec ``face_margin``).
    Parts of the square outside the photo are filled by repeating the edge pixels. Edge
    replication rather than black: training crops (FER2013, AffectNet) come from inside their
    photos, so a hard black border is a feature the classifier never saw, and black bands also
    drag the crop's brightness statistics down; a smeared edge is closer to what was really there.

    align: when the face has both eye landmarks, rotate about their midpoint so the eyes are
    level before cropping. Off by default because the usual training crops are unrotated boxes:
    turn it on for a model trained on aligned crops, so both sides see the same geometry.
    Rotating the photo about the eye midpoint and then cutting the square around the rotated box
    centre equals sampling a rotated square around the box centre, which is what happens here: one
    interpolation of only the pixels needed, not a rotation of the whole photo.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0 (a fraction of the face box per side), not {margin}")
    if image.mode != "RGB":
        image = image.convert("RGB")
    x, y, w, h = face.box_xywh
    side = max(1, round(max(w, h) * (1.0 + 2.0 * margin)))
    cx, cy = x + w / 2.0, y + h / 2.0

    roll = 0.0
    eyes = face.eyes if align else None
    if eyes is not None:
        (lx, ly), (rx, ry) = eyes
        # The subject's right eye is the image-left one in an upright photo (see base.py), so
        # this vector points rightwards and its angle is the face's roll.
        roll = math.atan2(ly - ry, lx - rx)
    if abs(math.degrees(roll)) < _MIN_ROLL_DEGREES:
        left, top = int(math.floor(cx - side / 2.0 + 0.5)), int(math.floor(cy - side / 2.0 + 0.5))
        return _padded_region(image, left, top, left + side, top + side)

    cos, sin = math.cos(roll), math.sin(roll)
    half = side / 2.0
    # Output pixel (u, v) samples the photo at centre + R(roll) . (u - half, v - half).
    corners = [(cx + cos * du - sin * dv, cy + sin * du + cos * dv) for du in (-half, half) for dv in (-half, half)]
    left = int(math.floor(min(px for px, _ in corners))) - 2
    top = int(math.floor(min(py for _, py in corners))) - 2
    right = int(math.ceil(max(px for px, _ in corners))) + 2
    bottom = int(math.ceil(max(py for _, py in corners))) + 2
    # Pad first, then rotate within the padded patch, so the corners get replicated edges too
    # (PIL's transform could only fill them with one colour).
    patch = _padded_region(image, left, top, right, bottom)
    ox, oy = cx - left, cy - top
    coefficients = (cos, -sin, ox - cos * half + sin * half, sin, cos, oy - sin * half - cos * half)
    return patch.transform((side, side), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)


def _padded_region(image: Image.Image, left: int, top: int, right: int, bottom: int) -> Image.Image:
    """Pixels [left, right) x [top, bottom) of ``image``, edge-replicated where outside it."""
    width, height = image.size
    if left >= 0 and top >= 0 and right <= width and bottom <= height:
        return image.crop((left, top, right, bottom))
    # Keep at least one real pixel to replicate even if the region misses the photo entirely.
    x0, x1 = min(max(left, 0), width - 1), max(min(right, width), 1)
    y0, y1 = min(max(top, 0), height - 1), max(min(bottom, height), 1)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    inside = np.asarray(image.crop((x0, y0, x1, y1)))
    pad = ((max(0, y0 - top), max(0, bottom - y1)), (max(0, x0 - left), max(0, right - x1)), (0, 0))
    padded = np.pad(inside, pad, mode="edge")
    # When the region lies wholly outside the photo the padding above overshoots; trim to size.
    off_y, off_x = max(0, top - y0), max(0, left - x0)
    padded = padded[off_y : off_y + (bottom - top), off_x : off_x + (right - left)]
    return Image.fromarray(np.ascontiguousarray(padded))
