"""CenterFace on a shrunk working copy still finds every face of 40 px or more (generated photos)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from face_emotion.faces import create_detector
from face_emotion.faces.centerface_detector import RELIABLE_FACE_PX

pytest.importorskip("onnxruntime")

# The astronaut's face box as CenterFace finds it in skimage's 512x512 photo: 88 x 120 px.
ASTRONAUT_FACE_XYWH = (182, 58, 88, 120)


@pytest.fixture(scope="module")
def head() -> Image.Image:
    from skimage import data

    x, y, w, h = ASTRONAUT_FACE_XYWH
    margin = 0.6
    return Image.fromarray(data.astronaut()).crop(
        (int(x - margin * w), int(y - margin * h), int(x + w * (1 + margin)), int(y + h * (1 + margin))))


@pytest.fixture(scope="module")
def detector():
    return create_detector("centerface", num_threads=1)


def photo_with_face(head: Image.Image, face_width: int, size: tuple[int, int], seed: int):
    """A smooth random background with the head pasted so that its face box is ``face_width`` wide."""
    rng = np.random.default_rng(seed)
    width, height = size
    background = Image.fromarray(rng.uniform(30, 220, (9, 12, 3)).astype(np.uint8)).resize(
        size, Image.Resampling.BICUBIC)
    scale = face_width / ASTRONAUT_FACE_XYWH[2]
    pasted = head.resize((round(head.width * scale), round(head.height * scale)), Image.Resampling.BILINEAR)
    left, top = int(rng.integers(0, width - pasted.width)), int(rng.integers(0, height - pasted.height))
    background.paste(pasted, (left, top))
    centre = (left + pasted.width / 2, top + pasted.height / 2)
    return background, centre


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (1024, 768), (1500, 1000)])
def test_a_40_px_face_is_found_in_photos_up_to_1575_px(detector, head, size):
    for seed in range(4):
        photo, centre = photo_with_face(head, 40, size, seed)
        faces = detector.detect(photo)
        assert len(faces) == 1, f"{size}, seed {seed}: {faces}"
        x, y, w, h = faces[0].box_xywh
        assert abs(x + w / 2 - centre[0]) < 15 and abs(y + h / 2 - centre[1]) < 25
        assert 30 <= w <= 60  # in the photo's pixels, whatever the working copy was


def test_above_1575_px_the_smallest_face_found_grows_as_documented(detector, head):
    size = (2400, 1800)
    smallest = round(RELIABLE_FACE_PX / 1024 * max(size)) + 4  # 65 px
    for seed in range(2):
        photo, _ = photo_with_face(head, smallest, size, seed)
        assert len(detector.detect(photo)) == 1


def test_working_copy_sizes(detector):
    assert detector.working_side(48) == 48  # a face crop that fills the image: never shrunk
    assert detector.working_side(224) == 224
    assert detector.working_side(320) == 224  # a webcam frame: not below 224
    assert detector.working_side(640) == 416  # 640 x 26 / 40
    assert detector.working_side(4032) == 1024  # capped
    bigger = create_detector("centerface", min_face=80)
    assert bigger.working_side(640) == 224
    with pytest.raises(ValueError):
        create_detector("centerface", min_face=0)


def test_thread_count_does_not_change_the_answer(head):
    photo, _ = photo_with_face(head, 60, (640, 480), seed=7)
    one = create_detector("centerface", num_threads=1).detect(photo)
    two = create_detector("centerface", num_threads=2).detect(photo)
    assert len(one) == 1 and [f.box_xywh for f in one] == [f.box_xywh for f in two]
