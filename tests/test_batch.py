"""`face-emotion batch`: inputs, Parquet rows and metadata, resume, and both engines (real Ray).

The Ray tests start a real local Ray (marked slow); the rest run the same batching code in
this process. Every comparison is against `predict --json` on the same generated files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.dataset as pads
import pyarrow.fs  # noqa: F401  (pa.fs)
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from face_emotion.batch import (
    BatchInputError,
    OutputError,
    PredictorOptions,
    create_engine,
    expand_inputs,
    read_metadata,
    run_batch,
)
from face_emotion.batch.engines import LocalEngine
from face_emotion.cli import main

skimage_data = pytest.importorskip("skimage.data")

FACE_FILES = 10
NO_FACE_FILES = 15
BAD_FILES = {"bad/truncated.jpg", "bad/text.jpg", "bad/empty.png"}


def _save(image: Image.Image, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def make_photo_folder(root: Path) -> Path:
    """Ten images with faces (one with two, one EXIF-rotated), fifteen without, three broken."""
    rng = np.random.default_rng(7)
    astronaut = Image.fromarray(skimage_data.astronaut())
    _save(astronaut, root / "faces/astro-512.png")
    _save(astronaut.resize((384, 384)), root / "faces/astro-384.jpg", quality=90)
    _save(astronaut.resize((320, 320)), root / "faces/astro-320.webp")
    _save(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), root / "faces/astro-flip.png")
    _save(ImageEnhance.Brightness(astronaut).enhance(0.6), root / "faces/astro-dark.jpg")
    _save(astronaut.crop((40, 0, 440, 400)), root / "faces/astro-crop.png")
    collage = Image.new("RGB", (768, 512), (30, 30, 30))
    collage.paste(astronaut, (0, 0))
    collage.paste(astronaut.resize((256, 256)), (512, 128))
    _save(collage, root / "faces/two-faces.png")
    # Stored sideways with an EXIF orientation: the rows must give the upright size, 512x400.
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(astronaut.crop((0, 0, 512, 400)).transpose(Image.Transpose.ROTATE_90), root / "faces/exif-rotated.jpg",
          exif=exif)
    _save(astronaut.resize((448, 448)), root / "faces/nested/deeper/astro-448.png")
    for i in range(8):
        _save(Image.fromarray(rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)), root / f"none/noise-{i}.png")
    for i in range(4):
        _save(Image.new("RGB", (80, 60), tuple(int(v) for v in rng.integers(0, 256, 3))), root / f"none/plain-{i}.png")
    _save(Image.fromarray(skimage_data.coffee()), root / "none/coffee.jpg")
    _save(Image.fromarray(skimage_data.chelsea()), root / "none/cat.png")
    _save(Image.fromarray(skimage_data.rocket()), root / "none/rocket.jpg")
    _save(Image.fromarray(skimage_data.camera()).convert("RGB"), root / "faces/camera.png")
    jpeg = (root / "faces/astro-384.jpg").read_bytes()
    (root / "bad").mkdir()
    (root / "bad/truncated.jpg").write_bytes(jpeg[:400])
    (root / "bad/text.jpg").write_bytes(b"this is not an image")
    (root / "bad/empty.png").write_bytes(b"")
    (root / "bad/notes.txt").write_text("not an image extension: never collected from a folder\n")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("batch-photos"))


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="module")
def detector_ready():
    faces = pytest.importorskip("face_emotion.faces")
    try:
        faces.create_detector()
    except faces.DetectorUnavailableError as error:
        pytest.skip(f"default face detector unavailable: {error}")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def predict_records(photos, model_dir, detector_ready) -> dict[str, dict]:
    result = invoke("predict", str(photos), "--model", str(model_dir), "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    return {record["path"]: record for record in map(json.loads, result.stdout.splitlines())}


def read_rows(output: Path) -> pa.Table:
    table = pads.dataset(str(output), format="parquet").to_table()
    return table.sort_by([("path", "ascending"), ("face", "ascending")])


def by_path(table: pa.Table) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        grouped.setdefault(row["path"], []).append(row)
    return grouped


def assert_rows_match_predict(table: pa.Table, records: dict[str, dict]) -> None:
    """The same faces, boxes, emotions and probabilities as `predict --json`, file by file."""
    rows = by_path(table)
    assert set(rows) == set(records)
    for path, record in records.items():
        image_rows = rows[path]
        if record["error"] is not None:
            (row,) = image_rows
            assert (row["error_code"], row["error"]) == (record["error"]["code"], record["error"]["message"])
            assert row["face"] is None and row["emotion"] is None and row["image_width"] is None
            continue
        assert all((row["image_width"], row["image_height"]) == (record["image"]["width"], record["image"]["height"])
                   for row in image_rows)
        if not record["faces"]:
            (row,) = image_rows
            assert row["face"] is None and row["error"] is None and row["image_width"] > 0
            continue
        assert [row["face"] for row in image_rows] == list(range(1, len(record["faces"]) + 1))
        for row, face in zip(image_rows, record["faces"]):
            assert {k: row[k] for k in ("x", "y", "width", "height")} == face["box"]
            assert row["score"] == pytest.approx(face["score"], abs=1e-4)
            assert row["emotion"] == face["emotion"]
            assert row["confidence"] == pytest.approx(face["confidence"], abs=1e-4)
            for name, probability in face["probabilities"].items():
                assert row[name] == pytest.approx(probability, abs=2e-6)
            assert row["error"] is None and row["error_code"] is None


def local_batch(inputs, output, model_dir, **kwargs):
    return run_batch([str(p) for p in inputs], str(output), engine=LocalEngine(),
                     options=PredictorOptions(model=str(model_dir), num_threads=1), **kwargs)


@pytest.fixture(scope="module")
def local_output(photos, model_dir, detector_ready, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("local-out") / "faces.parquet"
    result = invoke("batch", str(photos), "--output", str(output), "--model", str(model_dir), "--threads", "1")
    assert result.exit_code == 0, result.output
    return output


# --------------------------------------------------------------------------- local engine


def test_local_rows_agree_with_predict_json(local_output, predict_records, photos):
    table = read_rows(local_output)
    assert_rows_match_predict(table, predict_records)
    rows = by_path(table)
    # The fixture's own facts, so that agreement above is not agreement on nothing.
    faced = [p for p, r in rows.items() if r[0]["face"] == 1]
    assert len(faced) == FACE_FILES
    assert len(rows[str(photos / "faces/two-faces.png")]) == 2
    assert sum(1 for r in rows.values() if r[0]["face"] is None and r[0]["error"] is None) == NO_FACE_FILES
    errors = {str(Path(p).relative_to(photos)): (r[0]["error_code"], r[0]["error"])
              for p, r in rows.items() if r[0]["error"]}
    assert set(errors) == BAD_FILES
    assert errors["bad/empty.png"] == ("invalid_image", "empty file")
    assert errors["bad/text.jpg"] == ("invalid_image", "not a recognised image format")
    (rotated,) = rows[str(photos / "faces/exif-rotated.jpg")]
    assert (rotated["image_width"], rotated["image_height"]) == (512, 400)


def test_largest_face_is_face_1(local_output):
    rows = by_path(read_rows(local_output))
    two = rows[next(p for p in rows if p.endswith("two-faces.png"))]
    areas = [row["width"] * row["height"] for row in two]
    assert [row["face"] for row in two] == [1, 2] and areas[0] > 2 * areas[1]
    assert two[0]["x"] < 512 <= two[1]["x"]  # the big astronaut is on the left


def test_parquet_schema_and_metadata(local_output):
    parts = sorted(local_output.glob("*.parquet"))
    assert parts and all(p.name.startswith("part-") for p in parts)
    schema = pq.read_schema(parts[0])
    assert schema.names == ["path", "image_width", "image_height", "face", "x", "y", "width", "height", "score",
                            "emotion", "confidence", "anger", "happiness", "sadness", "error_code", "error"]
    metadata = read_metadata(schema)
    assert metadata["model"] == "tiny-test-model"
    assert metadata["classes"] == ["anger", "happiness", "sadness"]
    assert metadata["detector"] == "centerface" and metadata["face_index_base"] == 1
    table = read_rows(local_output)
    faces = table.filter(pc.is_valid(table.column("face")))
    sums = np.sum([faces.column(c).to_numpy() for c in ("anger", "happiness", "sadness")], axis=0)
    assert np.allclose(sums, 1.0, atol=1e-5)


def test_summary_line_and_existing_output_is_not_overwritten(local_output, photos, model_dir):
    again = invoke("batch", str(photos / "faces"), "--output", str(local_output), "--model", str(model_dir))
    assert again.exit_code == 1 and "--resume" in again.output
    done = invoke("batch", str(photos), "--output", str(local_output), "--model", str(model_dir), "--resume")
    assert done.exit_code == 0 and "nothing to do: all 28 images are in" in done.output


def test_cli_summary_counts(photos, model_dir, tmp_path, detector_ready):
    result = invoke("batch", str(photos / "faces"), str(photos / "bad"), "--output", str(tmp_path / "o"),
                    "--model", str(model_dir), "--threads", "1")
    assert result.exit_code == 0
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"{FACE_FILES + 3} images, {FACE_FILES + 1} faces, 3 errors, ")
    assert "images/s" in last and str(tmp_path / "o") in last


def test_every_image_failing_exits_1(photos, model_dir, tmp_path):
    result = invoke("batch", str(photos / "bad"), "--output", str(tmp_path / "o"), "--model", str(model_dir),
                    "--no-detect")
    assert result.exit_code == 1
    assert "3 images, 0 faces, 3 errors" in result.output


def test_resume_after_an_interrupted_run_finishes_the_rest(photos, model_dir, predict_records, tmp_path):
    class Interrupted(LocalEngine):
        def run(self, paths, job, predictor):
            for number, table in enumerate(super().run(paths, job, predictor)):
                if number == 2:
                    raise KeyboardInterrupt  # as a user's Ctrl-C, after two batches were analysed
                yield table

    output = tmp_path / "faces.parquet"
    with pytest.raises(KeyboardInterrupt):
        run_batch([str(photos)], str(output), engine=Interrupted(), batch_size=4,
                  options=PredictorOptions(model=str(model_dir), num_threads=1))
    first = read_rows(output)
    done = set(first.column("path").to_pylist())
    assert len(done) == 8  # the two finished batches were kept
    (output / "_writing-part-deadbeef-00001.parquet").write_bytes(b"half a file from a killed run")

    summary = local_batch([photos], output, model_dir, resume=True, batch_size=4)
    assert summary.skipped == 8 and summary.images == len(predict_records) - 8
    table = read_rows(output)
    paths = table.filter(pc.or_kleene(pc.is_null(table.column("face")),
                                              pc.equal(table.column("face"), 1))).column("path").to_pylist()
    assert sorted(paths) == sorted(set(paths))  # each image once
    assert_rows_match_predict(table, predict_records)


def test_parts_are_written_every_part_images(photos, model_dir, tmp_path):
    output = tmp_path / "parts"
    summary = local_batch([photos / "none"], output, model_dir, part_images=5, batch_size=2)
    assert summary.images == NO_FACE_FILES
    # batches of 2 images: a part is flushed once 5 or more are pending -> 6 + 6 + 3
    sizes = [pq.read_metadata(p).num_rows for p in sorted(output.glob("part-*.parquet"))]
    assert sorted(sizes) == [3, 6, 6]


def test_resume_refuses_another_model(photos, model_dir, tmp_path):
    from support.models import make_tiny_model

    other = make_tiny_model(tmp_path / "other", classes=("anger", "happiness", "surprise"))
    output = tmp_path / "out"
    local_batch([photos / "bad"], output, model_dir)
    with pytest.raises(OutputError, match="classes"):
        local_batch([photos / "none"], output, other, resume=True)


def test_output_that_is_a_file_is_refused(photos, model_dir, tmp_path):
    (tmp_path / "faces.parquet").write_bytes(b"x")
    result = invoke("batch", str(photos / "bad"), "--output", str(tmp_path / "faces.parquet"),
                    "--model", str(model_dir))
    assert result.exit_code == 1 and "is a file" in result.output


# --------------------------------------------------------------------------- inputs


def test_list_files_txt_csv_parquet(photos, tmp_path, model_dir, predict_records):
    faces = sorted(str(p) for p in (photos / "faces").rglob("*.*"))
    lists = tmp_path / "lists"
    lists.mkdir()
    # .txt: comments and blank lines skipped; a relative entry is relative to the list's folder.
    (lists / "some.txt").write_text(f"# first two\n\n{faces[0]}\n  {faces[1]}  \n")
    (lists / "sub").mkdir()
    targets = [photos / "faces/astro-512.png", photos / "faces/nested/deeper/astro-448.png"]
    (lists / "sub/relative.txt").write_text("".join(f"{os.path.relpath(t, lists / 'sub')}\n" for t in targets))
    pa.csv.write_csv(pa.table({"id": [1, 2], "path": faces[2:4]}), lists / "more.csv")
    pq.write_table(pa.table({"path": faces[3:6]}), lists / "more.parquet")
    expanded = expand_inputs([str(lists / "some.txt"), str(lists / "more.csv"), str(lists / "more.parquet"),
                              str(lists / "sub/relative.txt")])
    # Each file once: faces[3] is in two lists, astro-512.png (one of faces[:6]) in three.
    assert str(targets[0]) in faces[:6]
    assert expanded == faces[:6] + [str(targets[1])]

    output = tmp_path / "out"
    summary = local_batch([lists / "some.txt", lists / "more.csv", lists / "more.parquet"], output, model_dir)
    assert summary.images == 6
    assert_rows_match_predict(read_rows(output), {p: predict_records[p] for p in faces[:6]})


def test_folders_recurse_sorted_and_files_named_directly_are_taken(photos, tmp_path):
    # notes.txt has no image suffix: a folder does not contribute it.
    assert expand_inputs([str(photos / "bad")]) == sorted(str(photos / f) for f in BAD_FILES)
    # A named file is tried whatever its suffix; the same file twice is analysed once.
    odd = tmp_path / "photo.data"
    odd.write_bytes((photos / "faces/astro-384.jpg").read_bytes())
    assert expand_inputs([str(odd), str(odd), str(photos / "faces/nested")]) == [
        str(odd), str(photos / "faces/nested/deeper/astro-448.png")]


def test_relative_paths_become_absolute(photos, monkeypatch):
    monkeypatch.chdir(photos)
    assert expand_inputs(["bad/empty.png"]) == [str(photos / "bad/empty.png")]


def test_input_errors_are_clear(tmp_path):
    with pytest.raises(BatchInputError, match="no such file or folder: .*missing"):
        expand_inputs([str(tmp_path / "missing")])
    pa.csv.write_csv(pa.table({"file": ["a.jpg"]}), tmp_path / "list.csv")
    with pytest.raises(BatchInputError, match="no 'path' column .*file"):
        expand_inputs([str(tmp_path / "list.csv")])
    result = invoke("batch", str(tmp_path / "missing"), "--output", str(tmp_path / "o"))
    assert result.exit_code == 1 and "no such file or folder" in result.output
    wrong = invoke("batch", str(tmp_path), "--output", str(tmp_path / "o"), "--workers", "2")
    assert wrong.exit_code == 1 and "--engine ray" in wrong.output


def test_unreadable_listed_file_is_an_error_row(tmp_path, model_dir):
    listed = tmp_path / "list.txt"
    listed.write_text("gone.jpg\n")
    summary = local_batch([listed], tmp_path / "out", model_dir)
    (row,) = read_rows(tmp_path / "out").to_pylist()
    assert summary.errors == 1 and row["path"] == str(tmp_path / "gone.jpg")
    assert (row["error_code"], row["error"]) == ("unreadable_file", "cannot read file: No such file or directory")


def test_pyarrow_filesystem_uris_in_and_out(photos, model_dir, predict_records):
    """Through pyarrow's in-memory `mock://` filesystem: listing, reading and writing by URI."""
    from face_emotion.batch.inputs import filesystem_for

    filesystem, _ = filesystem_for("mock:///")
    filesystem.create_dir("bucket/photos/sub")
    local = sorted(str(p) for p in (photos / "faces").glob("*.png"))[:3]
    for i, path in enumerate(local):
        with filesystem.open_output_stream(f"bucket/photos/{'sub/' if i else ''}{Path(path).name}") as stream:
            stream.write(Path(path).read_bytes())
    filesystem.create_dir("bucket/lists")
    with filesystem.open_output_stream("bucket/lists/one.txt") as stream:
        stream.write(f"../photos/{Path(local[0]).name}\n".encode())
    assert expand_inputs(["mock:///bucket/lists/one.txt"]) == [f"mock:///bucket/photos/{Path(local[0]).name}"]
    summary = run_batch(["mock:///bucket/photos/"], "mock:///bucket/faces", engine=create_engine("local"),
                        options=PredictorOptions(model=str(model_dir), num_threads=1))
    assert summary.images == 3
    (part,) = [i.path for i in filesystem.get_file_info(pa.fs.FileSelector("bucket/faces")) if "part-" in i.path]
    table = pq.read_table(part, filesystem=filesystem)
    uris = sorted(set(table.column("path").to_pylist()))
    assert uris[0].startswith("mock:///bucket/photos/")
    renamed = pa.table({c: table.column(c) for c in table.column_names} |
                       {"path": pa.array([local[[Path(p).name for p in local].index(u.rsplit("/", 1)[1])]
                                          for u in table.column("path").to_pylist()])})
    assert_rows_match_predict(renamed.sort_by([("path", "ascending"), ("face", "ascending")]),
                              {p: predict_records[p] for p in local})


# --------------------------------------------------------------------------- Ray engine (real local Ray)


@pytest.mark.slow
def test_ray_without_address_starts_and_ends_its_own_ray_and_resumes(photos, model_dir, predict_records, tmp_path):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    output = tmp_path / "faces.parquet"
    first = sorted(predict_records)[:10]
    (tmp_path / "first.txt").write_text("\n".join(first) + "\n")
    local_batch([tmp_path / "first.txt"], output, model_dir)

    # One actor: two actors are the next test's; here the start and end of Ray are the point.
    result = invoke("batch", str(photos), "--output", str(output), "--engine", "ray", "--workers", "1",
                    "--model", str(model_dir), "--resume")
    assert result.exit_code == 0, result.output
    assert not ray.is_initialized()  # the Ray instance this command started ended with it
    assert f"{len(predict_records) - 10} images," in result.output and "10 done before (skipped)" in result.output
    table = read_rows(output)
    assert table.num_rows == len(set(table.column("path").to_pylist())) + 1  # only two-faces.png has 2 rows
    assert_rows_match_predict(table, predict_records)


@pytest.mark.slow
def test_ray_on_a_small_job_prints_only_the_summary(model_dir, tmp_path):
    # Ray's own logging (a token notice, Ray Data's plans and progress lines, a core_worker.cc
    # "error") was about 15 lines on a 12-image job, most of it written by C++ to the descriptor,
    # which only a real process shows.
    pytest.importorskip("ray")
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        pixels = np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        _save(Image.fromarray(pixels), folder / f"{i}.png")
    done = subprocess.run([sys.executable, "-m", "face_emotion", "batch", str(folder), "--output", str(tmp_path / "o"),
                           "--engine", "ray", "--workers", "1", "--no-detect", "--model", str(model_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith("12 images, 12 faces, 0 errors")


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_rows_equal_local_rows_and_predict_json(ray_session, photos, model_dir, local_output, predict_records,
                                                    tmp_path):
    output = tmp_path / "ray.parquet"
    result = invoke("batch", str(photos), "--output", str(output), "--engine", "ray", "--workers", "2",
                    "--model", str(model_dir), "--batch-size", "4")
    assert result.exit_code == 0, result.output
    assert ray_session.is_initialized()  # a Ray this process had started is left running
    ray_rows, local_rows = read_rows(output), read_rows(local_output)
    assert ray_rows.to_pylist() == local_rows.to_pylist()
    assert_rows_match_predict(ray_rows, predict_records)
    assert read_metadata(pq.read_schema(next(output.glob("part-*.parquet"))))["classes"] == ["anger", "happiness",
                                                                                            "sadness"]


def test_worker_threads_reach_the_face_detector(detector_ready):
    """A Ray actor's share of CPUs must bound the detector's onnxruntime threads too."""
    predictor = PredictorOptions(num_threads=1).load()
    session = getattr(predictor.detector._run, "_session", None)
    if session is None:
        pytest.skip("CenterFace runs on OpenCV here, whose threads are process-wide")
    assert session.get_session_options().intra_op_num_threads == 1
    assert predictor.detector_name == "centerface"


def test_a_local_ray_that_cannot_start_is_one_clear_line(photos, model_dir, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")

    def slow_start(**kwargs):
        raise Exception("The current node timed out during startup.")  # what Ray raises then

    monkeypatch.setattr(ray, "init", slow_start)
    # A Ray started by an earlier test in this process must not stand in for the failing start.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    result = invoke("batch", str(photos / "bad"), "--output", str(tmp_path / "o"), "--engine", "ray",
                    "--model", str(model_dir))
    assert result.exit_code == 1
    assert "could not start a local Ray instance" in result.output and "--address auto" in result.output
    assert "Traceback" not in result.output
