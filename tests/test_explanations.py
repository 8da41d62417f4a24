"""Heatmaps of the bundled model carry information: they differ per face and a smile lights the
mouth. (Grad-CAM at the head's 2x2 feature map lit the same corner for every face; the heatmaps
are now occlusion maps on the ONNX Runtime backend, inference.explain.)"""

from __future__ import annotations

import io
from pathlib import Path

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
    assert cam[2 * rows // 3 :].mean() > cam[: rows // 3].mean() + 0.05  # lower third against upper third


def test_heatmaps_of_different_faces_differ(bundled_predictor):
    astronaut = Image.fromarray(skimage_data.astronaut())
    camera = Image.fromarray(skimage_data.camera()).convert("RGB")
    maps = []
    for photo in (astronaut, camera, astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(12)):
        faces = bundled_predictor.predict(photo, explain=True)
        assert faces, "no face found"
        small = Image.fromarray((heatmap(faces[0]) * 255).astype(np.uint8)).resize((32, 32))
        maps.append(np.asarray(small, dtype=np.float64).ravel())
    correlation = np.corrcoef(np.array(maps))
    assert correlation[0, 1] < 0.9, correlation  # another person: another map
    assert correlation[np.triu_indices(3, 1)].mean() < 0.75, correlation
    assert max(m.std() for m in maps) > 0.1  # not flat


LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-expressions.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not LFW.is_file(),
                    reason="needs ../shared/data/lfw-expressions.tar.gz (research data, not committed)")
def test_on_real_smiling_faces_the_mouth_is_hotter_and_maps_differ(bundled_predictor):
    """Issue 16's check on real photos: LFW faces labelled happy (the first 40 in the archive's order)."""
    import tarfile

    photos = []
    with tarfile.open(LFW) as archive:
        for member in archive:
            if "/happy/" in member.name and member.isfile():
                photos.append(Image.open(io.BytesIO(archive.extractfile(member).read())).convert("RGB"))
                if len(photos) == 40:
                    break
    lower_hotter, maps = 0, []
    for photo in photos:
        faces = bundled_predictor.predict(photo, explain=True)
        if not faces or faces[0].emotion != "happiness":
            continue
        cam = heatmap(faces[0])
        rows = cam.shape[0]
        lower_hotter += cam[2 * rows // 3 :].mean() > cam[: rows // 3].mean()
        small = Image.fromarray((cam * 255).astype(np.uint8)).resize((32, 32))
        maps.append(np.asarray(small, dtype=np.float64).ravel())
    assert len(maps) >= 25, len(maps)
    print(f"lower third hotter on {lower_hotter} of {len(maps)}")
    assert lower_hotter >= 0.85 * len(maps), (lower_hotter, len(maps))
    correlation = np.corrcoef(np.array(maps))
    print(f"mean pairwise correlation {correlation[np.triu_indices(len(maps), 1)].mean():.2f}")
    assert correlation[np.triu_indices(len(maps), 1)].mean() < 0.75
