"""ONNX Runtime for every verb: the ONNX form derived from the safetensors file (cached by hash),
the same answers as PyTorch on real faces, no torch in a serving process, heatmaps included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_emotion.inference.backends import OnnxRuntimeBackend, PyTorchBackend
from face_emotion.inference.loading import open_backend
from face_emotion.inference.onnx_cache import derive_onnx, open_derived_onnx
from face_emotion.inference.predictor import Predictor
from face_emotion.models.files import ModelLoadError, bundled_model_path

pytest.importorskip("onnxruntime")
WEIGHTS = "model.safetensors"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("derive-run")
    shutil.copy(tiny_model_dir / "model.safetensors", run / "model.safetensors")
    return run


@pytest.fixture(scope="module")
def bundled():
    try:
        return bundled_model_path()
    except ModelLoadError:
        pytest.skip("this installation has no bundled model")


def real_faces() -> list[Image.Image]:
    """Real faces: the astronaut's, and LFW crops shipped with scikit-image."""
    from skimage import data

    faces = [Image.fromarray(data.astronaut()).crop((170, 40, 290, 190))]
    for grey in data.lfw_subset()[::10]:
        faces.append(Image.fromarray((grey * 255).round().astype(np.uint8)).convert("RGB"))
    return faces


@pytest.mark.slow
def test_derived_onnx_is_cached_by_content(run_dir, tmp_path):
    cache = tmp_path / "cache"
    first = derive_onnx(run_dir / WEIGHTS, cache_dir=cache)
    stamp = first.stat().st_mtime_ns
    again = derive_onnx(run_dir / WEIGHTS, cache_dir=cache)
    assert again == first and again.stat().st_mtime_ns == stamp  # exported once
    assert [p.name for p in cache.iterdir() if p.suffix == ".onnx"] == [first.name]

    # Other weights (retrained model) never meet the stale graph.
    from support.models import make_tiny_model

    other = make_tiny_model(tmp_path / "other", seed=1)
    assert derive_onnx(other / WEIGHTS, cache_dir=cache) != first


@pytest.mark.slow
def test_a_damaged_cache_file_is_derived_again(run_dir, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    derived = derive_onnx(run_dir / WEIGHTS)
    target = cache / derived.name
    target.write_bytes(derived.read_bytes()[:1000])
    backend = open_derived_onnx(run_dir / WEIGHTS, cache_dir=cache, num_threads=1)
    assert backend.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3)


def test_an_unwritable_cache_is_a_clear_model_error(run_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelLoadError, match="FACE_EMOTION_CACHE"):
        derive_onnx(run_dir / WEIGHTS, cache_dir=blocker / "cache")


def test_open_backend_runs_onnxruntime_unless_told_otherwise(run_dir):
    for backend in (open_backend(run_dir, num_threads=1), open_backend(run_dir / "model.safetensors", num_threads=1),
                    open_backend(run_dir, "onnxruntime", num_threads=1)):
        assert isinstance(backend, OnnxRuntimeBackend)
        assert backend.path == derive_onnx(run_dir / WEIGHTS)
    assert isinstance(open_backend(run_dir, "pytorch", num_threads=1), PyTorchBackend)


def test_a_stale_model_onnx_in_a_run_folder_is_not_run(run_dir, tmp_path):
    from support.models import make_tiny_model

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(run_dir / "model.safetensors", run / "model.safetensors")
    shutil.copy(derive_onnx(run_dir / WEIGHTS), run / "model.onnx")
    assert open_backend(run, num_threads=1).path == run / "model.onnx"  # exported from these weights
    retrained = make_tiny_model(tmp_path / "retrained", seed=1)
    shutil.copy(retrained / "model.safetensors", run / "model.safetensors")
    assert open_backend(run, num_threads=1).path == derive_onnx(run / WEIGHTS)  # the old graph is not trusted


@pytest.mark.slow
def test_onnx_and_pytorch_agree_on_real_faces_with_the_bundled_model(bundled):
    faces = real_faces()
    torch_predictor = Predictor(open_backend(bundled, "pytorch", num_threads=1), None)
    onnx_predictor = Predictor(open_backend(bundled, num_threads=1), None)
    assert onnx_predictor.backend_name == "onnxruntime"
    classes = torch_predictor.classes
    torch_probs = np.array([[p.probabilities[c] for c in classes] for f in faces
                            for p in torch_predictor.predict(f, detect=False)])
    onnx_probs = np.array([[p.probabilities[c] for c in classes] for f in faces
                           for p in onnx_predictor.predict(f, detect=False)])
    assert torch_probs.shape == (len(faces), len(classes))
    assert np.abs(torch_probs - onnx_probs).max() < 1e-4
    assert (torch_probs.argmax(1) == onnx_probs.argmax(1)).all()
    # Real faces, real answers: not one class for everything.
    assert len(set(torch_probs.argmax(1))) > 1


def test_heatmaps_work_on_the_derived_onnx_model(run_dir):
    predictor = Predictor(open_backend(run_dir, num_threads=1), None)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    (face,) = predictor.predict(image, explain=True, detect=False)
    assert face.heatmap_png is not None and face.heatmap_png.startswith(b"\x89PNG")


SERVING_PROCESS = r"""
import io, json, sys
from PIL import Image
from face_emotion.server import create_app
app = create_app({"model": sys.argv[1], "inference_threads": 1})
image = Image.new("RGB", (120, 90), (120, 110, 100))
buffer = io.BytesIO(); image.save(buffer, "JPEG")
client = app.test_client()
plain = client.post("/predict", data=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
before = "torch" in sys.modules
explained = client.post("/predict?explain=1&detect=0", data=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
print(json.dumps({"status": plain.status_code, "backend": app.extensions["face_emotion"].predictor.backend_name,
                  "torch_before_explain": before, "explain_status": explained.status_code,
                  "heatmap": bool(explained.json["faces"][0].get("heatmap_png")),
                  "torch_after_explain": "torch" in sys.modules}))
"""


@pytest.mark.slow
def test_a_serving_process_never_imports_torch_even_for_an_explanation(run_dir, tmp_path):
    # The session's cache (conftest): the ONNX form is usually derived already by the tests above.
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SERVING_PROCESS, str(run_dir)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 200 and report["backend"] == "onnxruntime"
    assert report["torch_before_explain"] is False
    assert report["explain_status"] == 200 and report["heatmap"] is True
    assert report["torch_after_explain"] is False  # occlusion maps run on ONNX Runtime


def test_the_server_falls_back_to_pytorch_when_no_onnx_form_can_be_made(run_dir, tmp_path, monkeypatch, caplog):
    from face_emotion.server.config import ServerConfig
    from face_emotion.server.service import load_predictor

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("FACE_EMOTION_CACHE", str(blocker))
    predictor = load_predictor(ServerConfig(model=str(run_dir), detector="none", inference_threads=1))
    assert predictor.backend_name == "pytorch"
    assert "with PyTorch" in caplog.text and "FACE_EMOTION_CACHE" in caplog.text


@pytest.mark.slow
def test_prepare_model_derives_before_the_workers_start(run_dir, tmp_path, monkeypatch):
    from face_emotion.server.config import ServerConfig
    from face_emotion.server.runner import prepare_model

    cache = tmp_path / "cache"
    monkeypatch.setenv("FACE_EMOTION_CACHE", str(cache))
    prepare_model(ServerConfig(model=str(run_dir), backend="pytorch"))
    assert not cache.exists()  # an explicit backend: nothing to derive
    prepare_model(ServerConfig(model=str(run_dir)))
    assert [p.name for p in (cache / "onnx").glob("*.onnx")] == [derive_onnx(run_dir / WEIGHTS).name]
