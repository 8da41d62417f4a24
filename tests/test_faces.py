"""Face detectors, the registry and crop geometry, on tiny images built here (seconds)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from face_emotion.faces import (
    DEFAULT_DETECTOR,
    Face,
    FaceDetector,
    WholeImageDetector,
    available_detectors,
    create_detector,
    crop_face,
    register_detector,
)
from face_emotion.faces import registry as registry_module

# skimage's astronaut (Eileen Collins, public domain): one frontal face, eyes near (203, 103)
# and (246, 106) in the 512x512 image.
ASTRONAUT_FACE_CENTRE = (225, 115)


def _require(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module)


def _make_detector(name: str):
    if name == "centerface":  # its model file ships inside face_emotion
        if importlib.util.find_spec("onnxruntime") is None:
            _require("cv2")
    elif name == "haar":
        _require("cv2")
    elif name == "mediapipe":
        _require("mediapipe")
    return create_detector(name)


DETECTORS = ["centerface", "haar", "mediapipe"]


@pytest.fixture(scope="module", params=DETECTORS)
def detector(request):
    return _make_detector(request.param)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.astronaut())


def centre(face: Face) -> tuple[float, float]:
    x, y, w, h = face.box_xywh
    return x + w / 2, y + h / 2


# --------------------------------------------------------------------------- detectors


def test_default_detector_is_registered():
    assert DEFAULT_DETECTOR in available_detectors()
    assert {"centerface", "haar", "mediapipe", "none"} <= set(available_detectors())


def test_astronaut_has_exactly_one_face_over_her_face(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1, [f.to_dict() for f in faces]
    face = faces[0]
    cx, cy = centre(face)
    assert abs(cx - ASTRONAUT_FACE_CENTRE[0]) < 25 and abs(cy - ASTRONAUT_FACE_CENTRE[1]) < 30
    assert 70 <= face.box_xywh[2] <= 140
    assert 0.0 < face.score <= 1.0
    json.dumps(face.to_dict())


def test_eye_landmarks_name_the_subjects_own_eyes(detector, astronaut):
    face = detector.detect(astronaut)[0]
    if face.eyes is None:
        pytest.skip(f"{detector.name} found no eyes in this face")
    left_eye, right_eye = face.eyes
    # Her right eye is on the image's left.
    assert right_eye[0] < left_eye[0]
    x, y, w, h = face.box_xywh
    for ex, ey in (left_eye, right_eye):
        assert x <= ex <= x + w and y <= ey <= y + h * 0.6


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_no_face_in_noise_or_blank_images(detector, kind):
    if kind == "noise":
        pixels = np.random.default_rng(0).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", (320, 240), (128, 128, 128))
    assert detector.detect(image) == []


def test_two_up_collage_gives_two_faces_largest_first(detector, astronaut):
    small = astronaut.resize((256, 256), Image.Resampling.LANCZOS)
    collage = Image.new("RGB", (768, 512), (0, 0, 0))
    collage.paste(small, (0, 128))  # smaller copy first, so the order has to come from sorting
    collage.paste(astronaut, (256, 0))
    faces = detector.detect(collage)
    assert len(faces) == 2, [f.to_dict() for f in faces]
    big, little = faces
    assert big.area > little.area
    assert abs(centre(big)[0] - (256 + ASTRONAUT_FACE_CENTRE[0])) < 25
    assert abs(centre(little)[0] - ASTRONAUT_FACE_CENTRE[0] / 2) < 15


def test_large_photo_boxes_come_back_in_original_pixels(astronaut):
    detector = _make_detector(DEFAULT_DETECTOR)
    big = astronaut.resize((1536, 1536), Image.Resampling.BILINEAR)  # above max_side: shrunk inside
    faces = detector.detect(big)
    assert len(faces) == 1
    cx, cy = centre(faces[0])
    assert abs(cx - 3 * ASTRONAUT_FACE_CENTRE[0]) < 60 and abs(cy - 3 * ASTRONAUT_FACE_CENTRE[1]) < 75
    eyes = faces[0].eyes
    assert eyes is not None and 500 < eyes[0][0] < 850


def test_face_filling_the_whole_image_is_found(astronaut):
    detector = _make_detector(DEFAULT_DETECTOR)
    crop = astronaut.crop((170, 60, 280, 170)).resize((64, 64), Image.Resampling.LANCZOS)
    faces = detector.detect(crop)
    assert len(faces) == 1
    assert faces[0].box_xywh[2] >= 40


def test_centerface_opencv_backend_keeps_results_across_image_sizes(astronaut):
    _require("cv2")
    detector = create_detector("centerface", backend="opencv")
    first = detector.detect(astronaut)
    detector.detect(astronaut.resize((320, 224)))  # a second input shape
    assert detector.detect(astronaut) == first
    assert len(first) == 1


def test_detect_from_several_threads_gives_the_serial_result(detector, astronaut):
    # The web service shares one detector between request threads.
    from concurrent.futures import ThreadPoolExecutor

    images = [astronaut, astronaut.resize((384, 384)), astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)] * 2
    serial = [detector.detect(image) for image in images]
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(detector.detect, images))
    assert parallel == serial


def test_importing_faces_loads_no_detector_library():
    code = (
        "import sys, face_emotion.faces; "
        "print([m for m in ('cv2', 'mediapipe', 'onnxruntime', 'onnx') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- whole image, Face, registry


def test_whole_image_detector():
    detector = create_detector("none")
    assert isinstance(detector, WholeImageDetector)
    assert isinstance(detector, FaceDetector)
    assert detector.name == "none"
    (face,) = detector.detect(Image.new("RGB", (80, 60)))
    assert face.box_xywh == (0, 0, 80, 60)
    assert face.score == 1.0
    assert face.landmarks is None and face.eyes is None


def test_face_is_frozen_and_serialises():
    face = Face((1.0, 2.0, 30.0, 40.0), 0.91234567, {"left_eye": (20, 10), "right_eye": (8, 11)})
    assert face.box_xywh == (1, 2, 30, 40) and all(type(v) is int for v in face.box_xywh)
    assert face.area == 1200
    assert face.eyes == ((20.0, 10.0), (8.0, 11.0))
    with pytest.raises(AttributeError):
        face.score = 0.5  # type: ignore[misc]
    assert json.loads(json.dumps(face.to_dict())) == {
        "box_xywh": [1, 2, 30, 40],
        "score": 0.9123,
        "landmarks": {"left_eye": [20.0, 10.0], "right_eye": [8.0, 11.0]},
    }
    with pytest.raises(ValueError):
        Face((0, 0, 0, 10), 1.0)


def test_unknown_detector_name_lists_the_options():
    with pytest.raises(ValueError) as error:
        create_detector("no-such-detector")
    message = str(error.value)
    assert "no-such-detector" in message
    for name in available_detectors():
        assert name in message


def test_register_detector_and_kwargs(monkeypatch):
    monkeypatch.setattr(registry_module, "_DETECTORS", dict(registry_module._DETECTORS))

    @register_detector("fixed-box")
    class FixedBox:
        def __init__(self, size: int = 10) -> None:
            self.size = size

        def detect(self, image):
            return [Face((0, 0, self.size, self.size), 0.5)]

    assert FixedBox.name == "fixed-box"
    assert "fixed-box" in available_detectors()
    assert create_detector("fixed-box", size=7).detect(Image.new("RGB", (20, 20)))[0].box_xywh == (0, 0, 7, 7)
    with pytest.raises(ValueError, match="already taken"):

        @register_detector("fixed-box")
        class Other:
            def detect(self, image):
                return []


def test_detector_library_errors_say_what_to_install(monkeypatch):
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe is installed")
    with pytest.raises(ImportError, match="pip install mediapipe"):
        create_detector("mediapipe")


# --------------------------------------------------------------------------- crop geometry


def gradient_image(width: int = 200, height: int = 160) -> Image.Image:
    """Every pixel different, so a crop can be located exactly."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs % 256, ys % 256, (xs * 7 + ys * 13) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def test_crop_adds_margin_on_each_side_and_is_square():
    image = gradient_image()
    face = Face((50, 60, 40, 20), 1.0)  # centre (70, 70); longer side 40
    crop = crop_face(image, face, 0.25)
    assert crop.size == (60, 60)  # 40 * (1 + 2 * 0.25)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(image.crop((40, 40, 100, 100))))
    assert crop_face(image, face, 0.0).size == (40, 40)


def test_crop_pads_outside_the_image_by_repeating_the_edge():
    image = gradient_image()
    pixels = np.asarray(image)
    crop = np.asarray(crop_face(image, Face((0, 0, 20, 20), 1.0), 0.5))  # square (-10, -10)-(30, 30)
    assert crop.shape == (40, 40, 3)
    np.testing.assert_array_equal(crop[10:, 10:], pixels[:30, :30])
    np.testing.assert_array_equal(crop[:10, 10:], np.broadcast_to(pixels[0, :30], (10, 30, 3)))
    np.testing.assert_array_equal(crop[10:, :10], np.broadcast_to(pixels[:30, :1], (30, 10, 3)))
    assert (crop[:10, :10] == pixels[0, 0]).all()


def test_crop_of_a_box_at_the_far_corner():
    image = gradient_image()
    crop = np.asarray(crop_face(image, Face((190, 150, 10, 10), 1.0), 1.0))  # (180, 140)-(210, 170)
    assert crop.shape == (30, 30, 3)
    assert (crop[20:, 20:] == np.asarray(image)[159, 199]).all()


def test_negative_margin_is_rejected():
    with pytest.raises(ValueError, match="margin"):
        crop_face(gradient_image(), Face((10, 10, 20, 20), 1.0), -0.1)


def eyes_image(angle_degrees: float, size: int = 200) -> tuple[Image.Image, Face]:
    """Uniform skin-coloured image with two dark eye dots 40 px apart, their line at ``angle``."""
    colour = (200, 150, 120)
    image = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(image)
    cx, cy = size / 2, size / 2 - 10
    a = math.radians(angle_degrees)
    right = (cx - 20 * math.cos(a), cy - 20 * math.sin(a))  # subject's right eye: image left
    left = (cx + 20 * math.cos(a), cy + 20 * math.sin(a))
    for x, y in (right, left):
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(0, 0, 0))
    face = Face((60, 50, 80, 90), 0.9, {"left_eye": left, "right_eye": right})
    return image, face


def dark_blob_centres(crop: Image.Image) -> list[tuple[float, float]]:
    dark = np.asarray(crop.convert("L")) < 80
    ys, xs = np.nonzero(dark)
    middle = (xs.min() + xs.max()) / 2
    halves = [xs < middle, xs >= middle]
    return [(float(xs[m].mean()), float(ys[m].mean())) for m in halves]


@pytest.mark.parametrize("angle", [20.0, -35.0])
def test_align_levels_the_eyes(angle):
    image, face = eyes_image(angle)
    (x_r, y_r), (x_l, y_l) = dark_blob_centres(crop_face(image, face, 0.2, align="eyes"))
    assert abs(y_r - y_l) < 1.0
    assert x_l - x_r == pytest.approx(40, abs=1.5)  # rotation keeps scale
    (_, y_r0), (_, y_l0) = dark_blob_centres(crop_face(image, face, 0.2, align="none"))
    assert abs(y_r0 - y_l0) > 10


def test_aligned_crop_keeps_size_centre_and_fills_corners_from_the_image():
    image, face = eyes_image(30.0)
    crop = crop_face(image, face, 0.6, align="eyes")  # corners reach outside the 200 px image
    side = round(90 * 2.2)
    assert crop.size == (side, side)
    pixels = np.asarray(crop).astype(int)
    # Edge replication: no black wedges in the rotated corners, only the uniform skin colour.
    for corner in (pixels[:3, :3], pixels[:3, -3:], pixels[-3:, :3], pixels[-3:, -3:]):
        assert np.abs(corner - np.array([200, 150, 120])).max() <= 2
    # The crop is centred on the box centre (100, 95); the eye midpoint (100, 90) is 5 px above
    # it, which in the rotated crop lies at (side/2 - 5 sin 30deg, side/2 - 5 cos 30deg).
    (x_r, y_r), (x_l, y_l) = dark_blob_centres(crop)
    a = math.radians(30.0)
    assert (x_r + x_l) / 2 == pytest.approx(side / 2 - 5 * math.sin(a), abs=1.0)
    assert (y_r + y_l) / 2 == pytest.approx(side / 2 - 5 * math.cos(a), abs=1.0)


def test_align_without_eyes_or_with_level_eyes_is_the_plain_crop():
    image = gradient_image()
    plain = Face((50, 60, 40, 40), 1.0)
    level = Face((50, 60, 40, 40), 1.0, {"left_eye": (80.0, 75.0), "right_eye": (60.0, 75.0)})
    expected = np.asarray(crop_face(image, plain, 0.1))
    np.testing.assert_array_equal(np.asarray(crop_face(image, plain, 0.1, align="eyes")), expected)
    np.testing.assert_array_equal(np.asarray(crop_face(image, level, 0.1, align="eyes")), expected)


# ----------------------------------------------------------------- five-point template alignment


def template_face(angle_degrees: float, scale: float, centre: tuple[float, float], size: int = 400):
    """A photo with five dark dots at the template's landmarks, rotated/scaled/moved, and its Face.

    The box is deliberately off (shifted and stretched): landmark alignment must not depend on it.
    """
    from face_emotion.faces.crop import FACE_TEMPLATE

    image = Image.new("RGB", (size, size), (200, 150, 120))
    draw = ImageDraw.Draw(image)
    a = math.radians(angle_degrees)
    points = {}
    for name, (u, v) in FACE_TEMPLATE.items():
        x = centre[0] + scale * (math.cos(a) * u - math.sin(a) * v)
        y = centre[1] + scale * (math.sin(a) * u + math.cos(a) * v)
        points[name] = (x, y)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(0, 0, 0))
    box = (int(centre[0] - 0.4 * scale) + 7, int(centre[1] - 0.55 * scale) - 5, int(0.9 * scale), int(1.2 * scale))
    return image, Face(box, 0.9, points)


def dot_centres(crop: Image.Image) -> np.ndarray:
    from scipy import ndimage

    dark = np.asarray(crop.convert("L")) < 80
    labels, n = ndimage.label(dark)
    centres = np.array(ndimage.center_of_mass(dark, labels, range(1, n + 1)))[:, ::-1]  # (x, y)
    return centres[np.lexsort((centres[:, 0], np.round(centres[:, 1] / 10)))]  # by row, then column


@pytest.mark.parametrize("angle,scale,centre",
                         [(0.0, 100.0, (200, 200)), (25.0, 140.0, (180, 210)), (-40.0, 70.0, (230, 170))])
def test_landmark_alignment_puts_every_face_on_the_template(angle, scale, centre):
    from face_emotion.faces.crop import FACE_TEMPLATE

    image, face = template_face(angle, scale, centre)
    crop = crop_face(image, face, 0.1, align="landmarks")
    side = crop.size[0]
    assert crop.size == (side, side) and side == round(scale * 1.2)
    # Expected dot positions in the crop: template units -> crop pixels.
    expected = np.array([((u + 0.6) / 1.2 * side, (v + 0.6) / 1.2 * side) for u, v in FACE_TEMPLATE.values()])
    expected = expected[np.lexsort((expected[:, 0], np.round(expected[:, 1] / 10)))]
    found = dot_centres(crop)
    assert found.shape == (5, 2)
    np.testing.assert_allclose(found, expected, atol=1.5)


def test_landmark_alignment_ignores_the_box_and_falls_back_to_it_without_landmarks():
    image, face = template_face(10.0, 120.0, (200, 200))
    x, y, w, h = face.box_xywh
    jittered = Face((x + 9, y - 6, w - 12, h + 8), 0.9, face.landmarks)
    a = np.asarray(crop_face(image, face, 0.0, align="landmarks")).astype(int)
    b = np.asarray(crop_face(image, jittered, 0.0, align="landmarks")).astype(int)
    assert a.shape == b.shape and np.abs(a - b).max() == 0
    bare = Face(face.box_xywh, 0.9)
    np.testing.assert_array_equal(np.asarray(crop_face(image, bare, 0.1, align="landmarks")),
                                  np.asarray(crop_face(image, bare, 0.1, align="none")))


def test_crop_geometry_maps_crop_pixels_back_to_the_photo():
    from face_emotion.faces.crop import FACE_TEMPLATE, crop_geometry

    _, face = template_face(-30.0, 90.0, (210, 190))
    geometry = crop_geometry(face, 0.25, "landmarks")
    side = geometry.side
    template_px = np.array([((u + 0.75) / 1.5 * side, (v + 0.75) / 1.5 * side) for u, v in FACE_TEMPLATE.values()])
    np.testing.assert_allclose(geometry.to_photo(template_px), np.array(list(face.landmarks.values())), atol=0.5)


def test_unknown_align_mode_is_refused():
    with pytest.raises(ValueError, match="align must be one of"):
        crop_face(gradient_image(), Face((10, 10, 20, 20), 1.0), 0.1, align="sideways")


def test_small_images_are_enlarged_for_detection():
    from face_emotion.faces.base import MIN_DETECTION_SIDE, working_copy

    small, factor = working_copy(Image.new("RGB", (48, 40)), max_side=1024)
    assert max(small.size) == MIN_DETECTION_SIDE and factor == pytest.approx(48 / MIN_DETECTION_SIDE)
    same, one = working_copy(Image.new("RGB", (300, 200)), max_side=1024)
    assert same.size == (300, 200) and one == 1.0
