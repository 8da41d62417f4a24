"""`face-emotion predict` in-process: output formats, bad files, annotation, model errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from face_emotion.cli import main


@pytest.fixture()
def photos(tmp_path) -> Path:
    """Three good images (two share a file name in different folders), a corrupt one, a text file."""
    rng = np.random.default_rng(0)

    def save(path: Path, fmt: str = "PNG") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)).save(path, format=fmt)

    root = tmp_path / "photos"
    save(root / "a" / "face.png")
    save(root / "b" / "face.png")
    save(root / "c.jpg", "JPEG")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image, not even tried")
    return root


def run(*args: str):
    return CliRunner().invoke(main, ["predict", *args], catch_exceptions=False)


def test_json_lines_one_valid_object_per_image(photos, tiny_model_dir):
    result = run(str(photos), "--model", str(tiny_model_dir), "--no-detect", "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # notes.txt is not an image extension, so not collected
    records = [json.loads(line) for line in lines]
    (corrupt,) = [r for r in records if Path(r["path"]).name == "corrupt.jpg"]
    assert corrupt["faces"] == [] and corrupt["image"] is None
    assert corrupt["error"]["code"] == "invalid_image" and corrupt["error"]["message"].startswith("corrupt")
    good = [r for r in records if r["error"] is None]
    assert len(good) == 3
    for record in good:
        # The web API's fields (README): "model" and "elapsed_ms" too.
        assert set(record) == {"path", "emotion", "confidence", "faces", "image", "error", "model", "elapsed_ms"}
        assert record["model"] == "tiny-test-model" and record["elapsed_ms"] > 0
        assert record["image"] == {"width": 50, "height": 40}
        (face,) = record["faces"]
        assert set(face) == {"box", "score", "emotion", "confidence", "probabilities"}
        assert face["box"] == {"x": 0, "y": 0, "width": 50, "height": 40}
        assert set(face["probabilities"]) == {"anger", "happiness", "sadness"}
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert face["emotion"] == max(face["probabilities"], key=face["probabilities"].get)
    assert "{" not in result.stderr  # nothing but JSON on stdout, nothing of it on stderr


def test_every_file_failing_exits_non_zero(tmp_path, tiny_model_dir):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "y.jpg").write_bytes(b"garbage")
    result = run(str(tmp_path / "x.png"), str(tmp_path / "y.jpg"), "--model", str(tiny_model_dir), "--no-detect",
                 "--json")
    assert result.exit_code == 1
    assert [json.loads(line)["error"] for line in result.stdout.splitlines()] == [
        {"code": "invalid_image", "message": "empty file"},
        {"code": "invalid_image", "message": "not a recognised image format"},
    ]
    assert "2 images, 0 faces, 2 errors" in result.stderr


def test_csv_one_row_per_face_and_per_failed_image(photos, tiny_model_dir, tmp_path):
    out = tmp_path / "out.csv"
    result = run(str(photos), "--model", str(tiny_model_dir), "--no-detect", "--csv", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(newline="")))
    assert list(rows[0]) == ["path", "face", "x", "y", "width", "height", "score", "emotion", "confidence",
                             "anger", "happiness", "sadness", "status", "error"]
    assert len(rows) == 4
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["error", "ok", "ok", "ok"]
    ok = [r for r in rows if r["status"] == "ok"]
    for row in ok:
        assert row["face"] == "1" and row["width"] == "50"  # numbered from 1, as on the page and in text
        assert sum(float(row[c]) for c in ("anger", "happiness", "sadness")) == pytest.approx(1.0, abs=1e-5)
    assert "4 images, 3 faces, 1 error;" in result.stderr
    to_stdout = run(str(photos / "c.jpg"), "--model", str(tiny_model_dir), "--no-detect", "--csv", "-")
    assert to_stdout.stdout.splitlines()[0].startswith("path,face,x")


def test_text_output_and_annotation(photos, tiny_model_dir, tmp_path):
    out_dir = tmp_path / "annotated"
    result = run(str(photos), "--model", str(tiny_model_dir), "--no-detect", "--annotate", str(out_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("face 1 at x=0 y=0 50x40") == 3
    assert "corrupt.jpg: error:" in result.stdout
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    # Paths below the folder given are kept, so the two face.png files do not collide.
    assert written == ["a/face.png", "b/face.png", "c.jpg"]
    original = Image.open(photos / "a" / "face.png")
    annotated = Image.open(out_dir / "a" / "face.png")
    assert annotated.size == original.size
    assert np.abs(np.asarray(annotated, dtype=int) - np.asarray(original, dtype=int)).sum() > 0  # box drawn


def test_same_file_name_from_different_arguments_is_deduplicated(photos, tiny_model_dir, tmp_path):
    out_dir = tmp_path / "annotated"
    result = run(str(photos / "a" / "face.png"), str(photos / "b"), "--model", str(tiny_model_dir),
                 "--no-detect", "--annotate", str(out_dir), "--json")
    assert result.exit_code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["face-2.png", "face.png"]


def test_model_errors_are_one_line(photos, tmp_path, monkeypatch):
    missing = run(str(photos), "--model", str(tmp_path / "no-model"), "--no-detect")
    assert missing.exit_code == 1
    assert "no model at" in missing.output and "--model" in missing.output and "Traceback" not in missing.output
    import face_emotion.models.files as bundled

    monkeypatch.setattr(bundled, "BUNDLED_MODEL_DIR", tmp_path / "no-bundled-model")
    no_default = run(str(photos), "--no-detect")
    assert no_default.exit_code == 1 and "no bundled default model" in no_default.output


def test_option_conflicts_empty_folder_unknown_detector(photos, tmp_path, tiny_model_dir):
    both = run(str(photos), "--model", str(tiny_model_dir), "--json", "--csv", "x.csv")
    assert both.exit_code == 1 and "choose one" in both.output
    (tmp_path / "empty").mkdir()
    empty = run(str(tmp_path / "empty"), "--model", str(tiny_model_dir), "--no-detect")
    assert empty.exit_code == 1 and "no images or videos found" in empty.output
    pytest.importorskip("face_emotion.faces")
    unknown = run(str(photos / "c.jpg"), "--model", str(tiny_model_dir), "--detector", "no-such-detector")
    assert unknown.exit_code == 1 and "unknown face detector" in unknown.output


def test_real_detector_faces_and_no_face(tmp_path, tiny_model_dir):
    faces = pytest.importorskip("face_emotion.faces")
    skimage_data = pytest.importorskip("skimage.data")
    try:
        faces.create_detector()
    except faces.DetectorUnavailableError as error:
        pytest.skip(f"default face detector unavailable: {error}")
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "astronaut.png")
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "coffee.png")
    result = run(str(tmp_path), "--model", str(tiny_model_dir), "--json")
    assert result.exit_code == 0, result.output
    records = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["coffee.png"]["faces"] == [] and records["coffee.png"]["error"] is None
    found = records["astronaut.png"]["faces"]
    assert len(found) >= 1
    areas = [f["box"]["width"] * f["box"]["height"] for f in found]
    assert areas == sorted(areas, reverse=True)
    text = run(str(tmp_path / "coffee.png"), "--model", str(tiny_model_dir))
    assert "no face found" in text.stdout
    assert "1 image, 0 faces, 0 errors" in text.stderr


def test_cli_json_and_the_web_api_give_one_shape_for_one_image(photos, tiny_model_dir):
    """The same image through `predict --json` and POST /predict: the same result, field for field."""
    from face_emotion.server import create_app

    image = photos / "c.jpg"
    line = run(str(image), "--model", str(tiny_model_dir), "--no-detect", "--json", "--threads", "1").stdout
    from_cli = json.loads(line)
    client = create_app({"TESTING": True, "model": str(tiny_model_dir), "inference_threads": 1}).test_client()
    from_api = client.post("/predict?detect=0", data=image.read_bytes(), content_type="image/jpeg").get_json()
    assert from_cli.pop("path") == str(image)
    assert set(from_api) == set(from_cli)
    assert from_cli.pop("elapsed_ms") > 0 and from_api.pop("elapsed_ms") > 0
    assert {k: from_api[k] for k in from_cli} == from_cli
    batch = client.post("/predict/batch?detect=0", data={"images": [(image.open("rb"), "c.jpg")]}).get_json()
    (item,) = batch["results"]
    assert {k: item[k] for k in from_cli if k != "model"} == {k: v for k, v in from_cli.items() if k != "model"}


def test_csv_face_column_reads_as_integers_in_pandas(photos, tiny_model_dir, tmp_path):
    # An image's own row (error, no face) used to leave `face` blank: pandas then read the whole
    # column as float (1.0, NaN). It is 0 there, so the column stays integer.
    pandas = pytest.importorskip("pandas")
    out = tmp_path / "out.csv"
    assert run(str(photos), "--model", str(tiny_model_dir), "--no-detect", "--csv", str(out)).exit_code == 0
    table = pandas.read_csv(out)
    assert str(table["face"].dtype) == "int64"
    assert sorted(table["face"]) == [0, 1, 1, 1]
    assert table.loc[table["face"] == 0, "status"].tolist() == ["error"]


def test_annotation_labels_stay_whole_at_the_image_edge(tmp_path, tiny_model_dir):
    # A face in the bottom-right corner: its label is moved inside the image instead of being cut
    # off. On a white photo the label's text is the only black: it must be as wide as the text.
    from PIL import ImageDraw, ImageFont

    from face_emotion.inference.results import Box, FacePrediction, ImageResult

    image = Image.new("RGB", (120, 80), (255, 255, 255))
    face = FacePrediction(Box(100, 60, 20, 20), 0.9, "happiness", 0.97, {"happiness": 0.97, "sadness": 0.03})
    drawn = np.asarray(ImageResult.of(image, [face]).annotate(image))
    text = np.all(drawn < 200, axis=2)  # the text and its anti-aliased edge; not the yellow patch
    columns, rows = np.flatnonzero(text.any(axis=0)), np.flatnonzero(text.any(axis=1))
    font = ImageFont.load_default(size=12)  # what the drawing picks for a 120 px image
    left, top, right, bottom = ImageDraw.Draw(image.copy()).textbbox((0, 0), "1 happiness 0.97", font=font)
    assert columns.max() - columns.min() + 1 >= (right - left) - 4
    assert rows.max() - rows.min() + 1 >= (bottom - top) - 3
    assert columns.max() < image.width - 1 and rows.max() < image.height - 1


def test_an_unreadable_clip_in_csv_is_an_error_row(tmp_path, tiny_model_dir):
    # predict_video called error_rows without importing it: NameError for --csv on a bad clip.
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    Image.new("RGB", (40, 30), (90, 90, 90)).save(tmp_path / "still.png")
    out = tmp_path / "rows.csv"
    result = run(str(tmp_path / "broken.mp4"), str(tmp_path / "still.png"), "--model", str(tiny_model_dir),
                 "--no-detect", "--csv", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(newline="")))
    (broken,) = [r for r in rows if r["path"].endswith("broken.mp4")]
    assert broken["status"] == "error" and broken["error"]
    assert [r["status"] for r in rows if r["path"].endswith("still.png")] == ["ok"]
