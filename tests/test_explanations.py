"""Grad-CAM heatmaps of the bundled model carry information: they differ per face and a smile
lights the mouth. (At the head's 2x2 feature map every map lit the same corner.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def bundled_predictor():
    from face_emotion.inference.predictor import Predictor

    return Predictor.load(num_threads=1)


def heatmap(face) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(face.heatmap_png))).astype(np.float64) / 255.0


def test_a_smile_lights_the_lower_face_not_the_forehead(bundled_predictor):
    (face,) = bundled_predictor.predict(Image.fromarray(skimage_data.astronaut()), explain=True)
    assert face.emotion == "happiness"
    cam = heatmap(face)
    assert cam.shape == (face.box.height, face.box.width)
    rows = cam.shape[0]
    forehead, mouth_and_chin = cam[: rows // 3].mean(), cam[rows // 2 :].mean()
    assert mouth_and_chin > forehead + 0.05, (forehead, mouth_and_chin)


def test_heatmaps_of_different_faces_differ(bundled_predictor):
    astronaut = Image.fromarray(skimage_data.astronaut())
    camera = Image.fromarray(skimage_data.camera()).convert("RGB")
    maps = []
    for photo in (astronaut, camera, astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(12)):
        faces = bundled_predictor.predict(photo, explain=True)
        assert faces, "no face found"
        maps.append(np.asarray(Image.fromarray((heatmap(faces[0]) * 255).astype(np.uint8)).resize((32, 32)), dtype=np.float64).ravel())
    correlation = np.corrcoef(np.array(maps))
    assert correlation[0, 1] < 0.9, correlation  # another person: another map
    assert max(m.std() for m in maps) > 0.1  # not flat
