"""ONNX export: self-describing file, PyTorch parity, int8 quantisation, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from face_emotion.cli import main
from face_emotion.inference import export as export_module
from face_emotion.inference.backends import OnnxRuntimeBackend, PyTorchBackend
from face_emotion.inference.export import ExportCheckError, export_onnx
from face_emotion.inference.loading import open_backend
from face_emotion.inference.predictor import Predictor
from face_emotion.models.files import ModelLoadError
from face_emotion.models.store import read_spec
from support.fakes import FixedFaces

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")




def two_faces() -> FixedFaces:
    from face_emotion.faces import Face

    return FixedFaces([Face((30, 10, 36, 30), 0.9, None), Face((4, 6, 14, 12), 0.7, None)], "two-faces")


def noise_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """The tiny model copied into a run folder with its fp32 and int8 ONNX exports beside it."""
    run = tmp_path_factory.mktemp("export-run")
    shutil.copy(tiny_model_dir / "model.safetensors", run / "model.safetensors")
    fp32 = export_onnx(run, run / "model.onnx", num_threads=1)
    int8 = export_onnx(run, run / "model.int8.onnx", int8=True, num_threads=1)
    return run, fp32, int8


def test_fp32_export_is_checked_and_self_describing(exported):
    run, result, _ = exported
    assert result.output == run / "model.onnx" and result.output.is_file()
    assert result.fp32_max_abs_prob_diff <= 1e-4
    assert result.fp32_check_inputs >= 16
    assert result.quantization == "none" and result.int8_top1_agreement is None
    assert result.output_bytes == result.fp32_bytes > 0
    json.dumps(result.to_dict())  # serialisable as is

    model = onnx.load(str(result.output))
    props = {p.key: p.value for p in model.metadata_props}
    spec = read_spec(run)
    assert json.loads(props["face_emotion_spec"]) == json.loads(spec.to_json())
    assert json.loads(props["class_names"]) == list(spec.classes)
    assert json.loads(props["preprocess"])["image_size"] == 32
    assert model.opset_import[0].version == 17
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"  # dynamic batch axis


def test_backend_parity_pytorch_vs_onnx(exported):
    run, _, _ = exported
    torch_predictor = Predictor(PyTorchBackend(run / "model.safetensors"), two_faces())
    onnx_predictor = Predictor.load(run / "model.onnx", detector=two_faces(), num_threads=1)
    assert onnx_predictor.backend_name == "onnxruntime"
    assert onnx_predictor.spec == torch_predictor.spec
    for image in noise_images(3):
        a, b = torch_predictor.predict(image), onnx_predictor.predict(image)
        assert [f.box for f in a] == [f.box for f in b]
        for fa, fb in zip(a, b):
            assert max(abs(fa.probabilities[c] - fb.probabilities[c]) for c in fa.probabilities) <= 1e-4


def test_int8_export_agrees_loosely_and_is_smaller(exported):
    run, fp32, result = exported
    assert result.int8 and "int8" in result.quantization
    assert "synthetic" in result.calibration and result.notes
    assert result.fp32_max_abs_prob_diff <= 1e-4
    assert result.output_bytes < 0.5 * result.fp32_bytes
    # Agreement on a random 3-class network is a loose signal: report it, assert only sanity.
    print(f"int8 top-1 agreement {result.int8_top1_agreement:.2%} on {result.int8_check_inputs} images")
    assert result.int8_top1_agreement >= 0.5
    backend = OnnxRuntimeBackend(run / "model.int8.onnx", num_threads=1)
    assert "int8" in backend.quantization
    faces = Predictor(backend, two_faces()).predict(noise_images(1)[0])
    assert len(faces) == 2 and sum(faces[0].probabilities.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_int8_with_calibration_folder(tiny_model_dir, tmp_path):
    from support.synthetic import make_learnable_dataset

    data = make_learnable_dataset(tmp_path / "faces", per_class=8)
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    result = export_onnx(tiny_model_dir, tmp_path / "m.onnx", int8=True, calibration_dir=data, num_threads=1)
    assert str(data) in result.calibration
    assert result.int8_check_inputs >= 12  # held-out folder images plus synthetic ones
    assert any("unreadable" in note for note in result.notes)


def test_failed_check_raises_and_leaves_no_file(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "FP32_TOLERANCE", -1.0)
    with pytest.raises(ExportCheckError, match="does not reproduce PyTorch"):
        export_onnx(tiny_model_dir, tmp_path / "bad.onnx", num_threads=1)
    assert not (tmp_path / "bad.onnx").exists()


def test_export_argument_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(tiny_model_dir, tmp_path / "model.bin")
    with pytest.raises(ModelLoadError, match="no model at"):
        export_onnx(tmp_path / "missing", tmp_path / "m.onnx")


def test_open_backend_choices(exported, tmp_path):
    run, _, _ = exported
    assert open_backend(run, num_threads=1).path == run / "model.onnx"  # ONNX Runtime, the folder's own export
    assert open_backend(run, "pytorch").name == "pytorch"
    with pytest.raises(ModelLoadError, match="the pytorch backend reads .safetensors"):
        open_backend(run / "model.onnx", "pytorch")
    with pytest.raises(ValueError, match="unknown backend"):
        open_backend(run, "tensorflow")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((run / "model.onnx").read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        open_backend(truncated)
    bare = onnx.load(str(run / "model.onnx"))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelLoadError, match="no face-emotion description"):
        open_backend(tmp_path / "bare.onnx")


def test_an_onnx_file_alone_explains_its_answers(exported, tmp_path):
    # Heatmaps are occlusion maps on the backend itself: no .safetensors needs to lie beside it.
    run, _, _ = exported
    alone = tmp_path / "alone.onnx"
    shutil.copy(run / "model.onnx", alone)
    predictor = Predictor.load(alone, detector=two_faces(), num_threads=1)
    faces = predictor.predict(noise_images(1)[0], explain=True)
    assert faces and all(f.heatmap_png for f in faces)


@pytest.mark.parametrize(("fmt", "mistake"), [("web", "output exists"), ("web", "model missing"),
                                               ("onnx", "model missing"), ("onnx", "output not .onnx")])
def test_export_mistakes_are_one_line_and_touch_nothing(tiny_model_dir, tmp_path, fmt, mistake):
    """A user's mistake ends `export` with one line and exit status 1: no traceback, nothing written."""
    model, output = tiny_model_dir, tmp_path / ("site" if fmt == "web" else "model.onnx")
    if mistake == "output exists":
        output.mkdir()
        (output / "mine.txt").write_text("the user's own file")
    elif mistake == "model missing":
        model = tmp_path / "no-such-run"
    else:
        output = tmp_path / "model.bin"
    result = CliRunner().invoke(main, ["export", "--format", fmt, "--model", str(model), "--output", str(output)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert {"output exists": "not an empty folder", "model missing": f"no model at {model}",
            "output not .onnx": "must end in .onnx"}[mistake] in line
    if mistake == "output exists":
        assert [p.name for p in output.iterdir()] == ["mine.txt"]
    else:
        assert not output.exists()


@pytest.mark.slow
def test_export_cli(tiny_model_dir, tmp_path, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "cli.onnx"
    result = runner.invoke(main, ["export", "--model", str(tiny_model_dir), "--format", "onnx", "--output", str(out),
                                  "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fp32_max_abs_prob_diff"] <= 1e-4 and out.is_file()
    text = runner.invoke(main, ["export", "--model", str(tiny_model_dir), "--output", str(tmp_path / "t.onnx")])
    assert text.exit_code == 0 and "fp32 check" in text.stdout

    missing = runner.invoke(main, ["export", "--model", str(tmp_path / "nope"), "--output", str(out)])
    assert missing.exit_code == 1 and "no model at" in missing.output and "Traceback" not in missing.output
    import face_emotion.models.files as bundled

    monkeypatch.setattr(bundled, "BUNDLED_MODEL_DIR", tmp_path / "no-bundled-model")
    no_default = runner.invoke(main, ["export", "--output", str(out)])
    assert no_default.exit_code == 1 and "--model" in no_default.output
    calibration_alone = runner.invoke(main, ["export", "--model", str(tiny_model_dir), "--output", str(out),
                                             "--calibration", str(tmp_path)])
    assert calibration_alone.exit_code == 1 and "--int8" in calibration_alone.output


def test_an_int8_file_shipped_beside_the_weights_is_used_for_exactly_those_weights(tiny_model_dir, tmp_path):
    from face_emotion.models.store import load_model, save_model
    from support.synthetic import make_learnable_dataset

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_model_dir / "model.safetensors", run / "model.safetensors")
    data = make_learnable_dataset(tmp_path / "faces", per_class=6)
    made = export_onnx(run, run / "model.int8.onnx", int8=True, calibration_dir=data, num_threads=1)
    assert "kept in fp32" in made.quantization  # first convolution and the logits layer
    again = export_onnx(run, tmp_path / "copy.onnx", int8=True, num_threads=1)
    assert "shipped" in again.calibration and not any("synthetic" in note for note in again.notes)
    assert (tmp_path / "copy.onnx").read_bytes() == (run / "model.int8.onnx").read_bytes()
    # Other weights never pair with it, even under the same file name.
    other = tmp_path / "other"
    network, spec = load_model(run)
    save_model(network, spec.replace(name="changed"), other)
    shutil.copy(run / "model.int8.onnx", other / "model.int8.onnx")
    fresh = export_onnx(other, tmp_path / "fresh.onnx", int8=True, num_threads=1)
    assert "synthetic" in fresh.calibration


def test_web_export_without_the_browser_runtime_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    """A checkout that skipped `make setup` (or a broken install) lacks onnxruntime-web's files."""
    from face_emotion.server import model_files

    empty = tmp_path / "no-runtime"
    empty.mkdir()
    monkeypatch.setattr(model_files, "RUNTIME_DIR", empty)
    output = tmp_path / "site"
    result = CliRunner().invoke(main, ["export", "--format", "web", "--output", str(output)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "onnxruntime-web is not installed" in line and "ort-wasm-simd-threaded.wasm" in line
    assert not output.exists()
