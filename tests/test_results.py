"""ImageResult: the one image-level result every output (CLI text/JSON/CSV, API, annotation) renders."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from face_emotion.inference.results import Box, FacePrediction, ImageResult, csv_header

CLASSES = ("anger", "happiness")


def face(x: int, emotion: str = "happiness", p: float = 0.8) -> FacePrediction:
    other = "anger" if emotion == "happiness" else "happiness"
    return FacePrediction(Box(x, 10, 20, 20), 0.9, emotion, p, {emotion: p, other: 1 - p})


def test_faces_are_numbered_from_1_in_csv_and_text():
    result = ImageResult.of(Image.new("RGB", (100, 50)), [face(5), face(60, "anger", 0.6)], path="a.png")
    rows = result.csv_rows(CLASSES)
    assert [row[1] for row in rows] == [1, 2]
    assert all(len(row) == len(csv_header(CLASSES)) for row in rows)
    lines = result.text_lines()
    assert lines[0] == "a.png: 2 faces" and lines[1].startswith("  face 1 at x=5") and lines[2].startswith("  face 2")
    assert ImageResult.of(Image.new("RGB", (8, 8)), [face(0)]).text_lines()[0] == "image: 1 face"


def test_an_error_has_one_shape_in_json_csv_and_text():
    result = ImageResult.failed("invalid_image", "not a recognised image format", path="x.jpg")
    assert not result.ok
    assert json.loads(json.dumps(result.to_dict())) == {
        "path": "x.jpg", "emotion": None, "confidence": None, "faces": [], "image": None,
        "error": {"code": "invalid_image", "message": "not a recognised image format"},
    }
    (row,) = result.csv_rows(CLASSES)
    assert row[0] == "x.jpg" and row[-2:] == ["error", "not a recognised image format"]
    assert result.text_lines() == ["x.jpg: error: not a recognised image format"]


def test_largest_face_fills_the_top_level_fields_and_path_is_omitted_without_one():
    data = ImageResult.of(Image.new("RGB", (100, 50)), [face(5, p=0.75), face(60, "anger")]).to_dict()
    assert "path" not in data and data["error"] is None
    assert data["emotion"] == "happiness" and data["confidence"] == 0.75
    assert data["image"] == {"width": 100, "height": 50}


def test_annotation_draws_each_box_and_leaves_the_original_alone():
    image = Image.new("RGB", (100, 60), (0, 0, 0))
    annotated = ImageResult.of(image, [face(5), face(60)]).annotate(image)
    pixels = np.asarray(annotated)
    assert annotated.size == image.size and np.asarray(image).max() == 0
    # Each box's bottom edge is drawn in the box colour.
    assert (pixels[29, 5:25] == (255, 210, 0)).all() and (pixels[29, 60:80] == (255, 210, 0)).all()
