"""Face -> the square crop that the eval transform resizes for the model: the one crop geometry.

Training (data.face_crops), `evaluate`, `predict`, `serve` and video all cut faces here, with the
margin and alignment that the model file records (PreprocessSpec.face_margin / face_align), so a
model sees at inference exactly the geometry it was trained and validated on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from face_emotion.errors import InvalidArgumentError
from face_emotion.faces.base import Face
from face_emotion.models.spec import ALIGN_MODES, PreprocessSpec

# Below this roll the eyes are level for any practical purpose; skipping the resampling keeps
# the crop pixel-exact (a rotation by 0.1 degrees would only blur it).
_MIN_ROLL_DEGREES = 0.5

# The canonical face: where CenterFace's five landmarks sit, in units of the face box's longer
# side, origin at the box centre (y down). Median over 1,489 real photos (LFW crops), made
# mirror-symmetric and level: `python scripts/derive_face_template.py lfw-expressions --limit 1500`.
# "landmarks" alignment maps a face's own landmarks onto these points (least-squares similarity),
# so every face lands at the same place, scale and roll in its crop whatever box the detector
# drew: a box's size and centre jitter from photo to photo, the eyes and mouth do not.
FACE_TEMPLATE: dict[str, tuple[float, float]] = {
    "right_eye": (-0.1996, -0.1123),
    "left_eye": (+0.1996, -0.1123),
    "nose": (+0.0000, +0.1052),
    "mouth_right": (-0.1615, +0.2576),
    "mouth_left": (+0.1615, +0.2576),
}


@dataclass(frozen=True)
class CropGeometry:
    """Where a crop lies in its photo: crop pixel (u, v) samples photo point M @ (u, v, 1)."""

    side: int  # the crop is side x side pixels, at about the photo's own resolution
    matrix: tuple[tuple[float, float, float], tuple[float, float, float]]  # 2x3, crop -> photo

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        m = np.asarray(self.matrix)
        return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def crop_geometry(face: Face, margin: float, align: str = "none") -> CropGeometry:
    """The square a face's crop covers: its side (in photo pixels) and the crop -> photo map.

    margin: the square's side is the face size times (1 + 2 * margin), so a margin of 0.25 adds a
    quarter of the face on each side. The face size is the box's longer side ("none", "eyes"), or
    the template's unit fitted to the landmarks ("landmarks", where it matches the box size of an
    average face).
    align: "none" - the box's square, unrotated; "eyes" - the box's square rotated about its centre
    so the eyes are level; "landmarks" - the template square fitted to the face's landmarks
    (all five when the detector gives them, the eyes alone otherwise), which fixes centre, scale
    and roll; a face without landmarks falls back to its box.
    """
    if margin < 0:
        raise InvalidArgumentError(f"margin must be >= 0 (a fraction of the face box per side), not {margin}")
    if align not in ALIGN_MODES:
        raise InvalidArgumentError(f"align must be one of {', '.join(ALIGN_MODES)}, not {align!r}")
    half_units = 0.5 + margin
    fitted = _fit_template(face) if align == "landmarks" else None
    if fitted is not None:
        scale, roll, (tx, ty) = fitted
        cx, cy = tx, ty  # the template's origin in the photo
    else:
        x, y, w, h = face.box_xywh
        scale, cx, cy = float(max(w, h)), x + w / 2.0, y + h / 2.0
        roll = _eye_roll(face) if align in ("eyes", "landmarks") else 0.0
        if abs(math.degrees(roll)) < _MIN_ROLL_DEGREES:
            roll = 0.0
    side = max(1, round(scale * 2.0 * half_units))
    # Unrotated crops keep integer pixel offsets (pixel-exact, no resampling blur).
    if roll == 0.0 and fitted is None:
        left, top = math.floor(cx - side / 2.0 + 0.5), math.floor(cy - side / 2.0 + 0.5)
        return CropGeometry(side, ((1.0, 0.0, float(left)), (0.0, 1.0, float(top))))
    # Crop pixel (u, v) -> template offset (u - side/2) * k -> photo centre + R(roll) . offset.
    k = (scale * 2.0 * half_units) / side
    cos, sin = math.cos(roll) * k, math.sin(roll) * k
    half = side / 2.0
    return CropGeometry(
        side, ((cos, -sin, cx - cos * half + sin * half), (sin, cos, cy - sin * half - cos * half))
    )


def crop_face(image: Image.Image, face: Face, margin: float, *, align: str = "none") -> Image.Image:
    """The square crop of ``face`` (see crop_geometry); parts outside the photo repeat its edge.

    Edge replication rather than black: training crops (FER2013, AffectNet) come from inside their
    photos, so a hard black border is a feature the classifier never saw, and black bands also
    drag the crop's brightness statistics down; a smeared edge is closer to what was really there.
    """
    return cut(image, crop_geometry(face, margin, align))


def crop_for_model(image: Image.Image, face: Face, preprocess: PreprocessSpec) -> tuple[Image.Image, CropGeometry]:
    """The crop a model with ``preprocess`` sees for ``face``, and where it lies in the photo.

    The one faces -> crops step of training, evaluation, prediction and serving.
    """
    geometry = crop_geometry(face, float(preprocess.face_margin), preprocess.face_align)
    return cut(image, geometry), geometry


def cut(image: Image.Image, geometry: CropGeometry) -> Image.Image:
    """Sample ``geometry``'s square out of ``image`` (bilinear, edge-replicated outside)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    (a, b, left), (c, d, top) = geometry.matrix
    side = geometry.side
    if (a, b, c, d) == (1.0, 0.0, 0.0, 1.0) and float(left).is_integer() and float(top).is_integer():
        return _padded_region(image, int(left), int(top), int(left) + side, int(top) + side)
    import cv2

    # Only the photo region under the square is handed to OpenCV (a 4-megapixel photo need not
    # be copied for a 100-pixel face); padding it first lets BORDER_REPLICATE see true edges.
    corners = geometry.to_photo(np.array([[0, 0], [side, 0], [0, side], [side, side]], dtype=np.float64))
    x0, y0 = (int(math.floor(v)) - 2 for v in corners.min(axis=0))
    x1, y1 = (int(math.ceil(v)) + 2 for v in corners.max(axis=0))
    patch = np.asarray(_padded_region(image, x0, y0, x1, y1))
    matrix = np.array([[a, b, left - x0], [c, d, top - y0]], dtype=np.float64)
    # The map goes crop -> photo, i.e. it is the inverse map warpAffine samples with.
    out = cv2.warpAffine(
        patch, matrix, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    return Image.fromarray(out)


def _eye_roll(face: Face) -> float:
    eyes = face.eyes
    if eyes is None:
        return 0.0
    (lx, ly), (rx, ry) = eyes
    # The subject's right eye is the image-left one in an upright photo (see base.py), so this
    # vector points rightwards and its angle is the face's roll.
    return math.atan2(ly - ry, lx - rx)


def _fit_template(face: Face) -> tuple[float, float, tuple[float, float]] | None:
    """Least-squares similarity (Umeyama 1991) template -> the face's landmarks, or None.

    Returns (scale in pixels per template unit, roll in radians, template origin in the photo).
    """
    if not face.landmarks:
        return None
    names = [n for n in FACE_TEMPLATE if n in face.landmarks]
    if not {"left_eye", "right_eye"} <= set(names):
        return None
    src = np.array([FACE_TEMPLATE[n] for n in names], dtype=np.float64)
    dst = np.array([face.landmarks[n] for n in names], dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    # For 2-D similarity the optimum has a closed form in complex numbers: d ~ z * s.
    sz, dz = s[:, 0] + 1j * s[:, 1], d[:, 0] + 1j * d[:, 1]
    z = np.vdot(sz, dz) / max(float(np.vdot(sz, sz).real), 1e-12)
    scale, roll = float(abs(z)), float(np.angle(z))
    if not scale > 0:
        return None
    origin = dst_mean - _rotate(src_mean, roll) * scale
    return scale, roll, (float(origin[0]), float(origin[1]))


def _rotate(point: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * point[0] - s * point[1], s * point[0] + c * point[1]])


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
