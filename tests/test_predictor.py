"""Predictor: faces -> one batch -> probabilities, checked against an independent computation."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from face_emotion.inference.backends import PyTorchBackend
from face_emotion.inference.explain import occlusion_maps
from face_emotion.inference.predictor import Predictor
from face_emotion.models.files import ModelLoadError
from face_emotion.models.store import load_model
from face_emotion.transforms import eval_transform


def noise_image(width: int = 80, height: int = 60, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


class TwoFaces:
    """A fake detector: a small face listed first, a larger eye-annotated one second."""

    name = "two-faces"

    def detect(self, image):
        from face_emotion.faces import Face

        return [
            Face((4, 6, 14, 12), 0.7, None),
            Face((30, 10, 36, 30), 0.9, {"left_eye": (56.0, 20.0), "right_eye": (40.0, 18.0)}),
        ]


class NoFaces:
    name = "no-faces"

    def detect(self, image):
        return []


class CountingBackend:
    """Wraps a backend and records every batch it is given."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.spec, self.path = inner.name, inner.spec, inner.path
        self.batches: list[np.ndarray] = []

    @property
    def classes(self):
        return self.inner.classes

    def run(self, batch):
        self.batches.append(batch.copy())
        return self.inner.run(batch)


def reference_probs(model_dir, crops: list[Image.Image]) -> np.ndarray:
    """softmax(logits / T), one crop at a time, straight from the network: no Predictor code."""
    network, spec = load_model(model_dir)
    transform = eval_transform(spec.preprocess)
    rows = []
    with torch.no_grad():
        for crop in crops:
            logits = network(torch.from_numpy(transform(crop))[None]).double()
            rows.append(torch.softmax(logits / spec.temperature, dim=1)[0].numpy())
    return np.stack(rows)


def probs_of(face, classes) -> np.ndarray:
    return np.array([face.probabilities[c] for c in classes])


@pytest.fixture(scope="module")
def whole_image_predictor(tiny_model_dir) -> Predictor:
    return Predictor.load(tiny_model_dir, detector="none")


def test_whole_image_is_one_face_with_independent_probabilities(whole_image_predictor, tiny_model_dir):
    image = noise_image()
    faces = whole_image_predictor.predict(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.box.to_dict() == {"x": 0, "y": 0, "width": 80, "height": 60}
    assert face.score == 1.0
    classes = whole_image_predictor.spec.classes
    assert set(face.probabilities) == set(classes)
    probs = probs_of(face, classes)
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(probs, reference_probs(tiny_model_dir, [image])[0], atol=1e-5)
    assert face.emotion == classes[int(probs.argmax())]
    assert face.confidence == pytest.approx(probs.max())
    assert face.heatmap_png is None


def test_temperature_is_applied(whole_image_predictor):
    # The fixture model has T = 1.5: the probabilities must be softmax(logits / 1.5), not softmax(logits).
    assert whole_image_predictor.spec.temperature == 1.5
    image = noise_image(seed=3)
    batch = whole_image_predictor.batch([image])
    logits = whole_image_predictor.backend.run(batch)[0].astype(np.float64)
    expected = np.exp(logits / 1.5) / np.exp(logits / 1.5).sum()
    face = whole_image_predictor.predict(image)[0]
    np.testing.assert_allclose(probs_of(face, whole_image_predictor.spec.classes), expected, atol=1e-9)


def test_metadata(whole_image_predictor):
    assert whole_image_predictor.backend_name == "onnxruntime"  # the default of every verb
    assert whole_image_predictor.detector_name == "none"
    assert whole_image_predictor.spec.classes == ("anger", "happiness", "sadness")


def test_faces_largest_first_in_one_batch(tiny_model_dir):
    from face_emotion.faces.crop import crop_for_model

    backend = CountingBackend(PyTorchBackend(tiny_model_dir / "model.safetensors"))
    predictor = Predictor(backend, TwoFaces())
    image = noise_image()
    faces = predictor.predict(image)
    assert [f.box.to_dict() for f in faces] == [
        {"x": 30, "y": 10, "width": 36, "height": 30},
        {"x": 4, "y": 6, "width": 14, "height": 12},
    ]
    assert [f.score for f in faces] == pytest.approx([0.9, 0.7])
    # Every face of an image in one call of the backend.
    assert len(backend.batches) == 1 and backend.batches[0].shape == (2, 3, 32, 32)
    detected = sorted(TwoFaces().detect(image), key=lambda f: -f.area)
    crops = [crop_for_model(image, face, predictor.spec.preprocess)[0] for face in detected]
    expected = reference_probs(tiny_model_dir, crops)
    for face, row in zip(faces, expected):
        probs = probs_of(face, predictor.spec.classes)
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(probs, row, atol=1e-5)


def test_detect_false_uses_whole_image(tiny_model_dir):
    backend = CountingBackend(PyTorchBackend(tiny_model_dir / "model.safetensors"))
    faces = Predictor(backend, TwoFaces()).predict(noise_image(), detect=False)
    assert len(faces) == 1 and faces[0].box.to_dict() == {"x": 0, "y": 0, "width": 80, "height": 60}
    assert backend.batches[0].shape[0] == 1


def test_no_face_gives_empty_list_without_running_the_model(tiny_model_dir):
    backend = CountingBackend(PyTorchBackend(tiny_model_dir / "model.safetensors"))
    assert Predictor(backend, NoFaces()).predict(noise_image()) == []
    assert backend.batches == []


def test_tta_averages_crop_and_mirror_in_the_same_batch(tiny_model_dir):
    backend = CountingBackend(PyTorchBackend(tiny_model_dir / "model.safetensors"))
    predictor = Predictor(backend, TwoFaces(), tta=True)
    image = noise_image(seed=5)
    faces = predictor.predict(image)
    assert len(backend.batches) == 1 and backend.batches[0].shape == (4, 3, 32, 32)
    from face_emotion.faces.crop import crop_for_model

    detected = sorted(TwoFaces().detect(image), key=lambda f: -f.area)
    crops = [crop_for_model(image, f, predictor.spec.preprocess)[0] for f in detected]
    mirrored = [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in crops]
    expected = (reference_probs(tiny_model_dir, crops) + reference_probs(tiny_model_dir, mirrored)) / 2
    for face, row in zip(faces, expected):
        np.testing.assert_allclose(probs_of(face, predictor.spec.classes), row, atol=1e-5)
    plain = Predictor(PyTorchBackend(tiny_model_dir / "model.safetensors"), TwoFaces()).predict(image)
    assert not np.allclose(probs_of(plain[0], predictor.spec.classes), probs_of(faces[0], predictor.spec.classes))


def test_scoring_logits_with_tta_give_back_the_served_probabilities(tiny_model_dir):
    # evaluate --tta scores softmax(logits / temperature): it must be what predict --tta serves.
    predictor = Predictor(PyTorchBackend(tiny_model_dir / "model.safetensors"), TwoFaces(), tta=True)
    image = noise_image(seed=7)
    faces = predictor.predict(image)
    from face_emotion.faces.crop import crop_for_model

    detected = sorted(TwoFaces().detect(image), key=lambda f: -f.area)
    crops = [crop_for_model(image, f, predictor.spec.preprocess)[0] for f in detected]
    scored = torch.softmax(torch.from_numpy(predictor.logits(crops)) / predictor.spec.temperature, dim=1).numpy()
    for face, row in zip(faces, scored):
        np.testing.assert_allclose(probs_of(face, predictor.spec.classes), row, atol=1e-5)
    plain = Predictor(PyTorchBackend(tiny_model_dir / "model.safetensors"), TwoFaces())
    unmirrored = torch.softmax(torch.from_numpy(plain.logits(crops)) / plain.spec.temperature, dim=1).numpy()
    assert not np.allclose(unmirrored, scored, atol=1e-3)  # the mirror changes the answer here


def test_explain_gives_box_sized_png_per_face(tiny_model_dir):
    predictor = Predictor(PyTorchBackend(tiny_model_dir / "model.safetensors"), TwoFaces())
    faces = predictor.predict(noise_image(), explain=True)
    assert len(faces) == 2
    for face in faces:
        heatmap = Image.open(io.BytesIO(face.heatmap_png))
        assert heatmap.format == "PNG" and heatmap.mode == "L"
        assert heatmap.size == (face.box.width, face.box.height)
    assert "heatmap_png" in faces[0].to_dict() and "heatmap_png" not in faces[0].to_dict(include_heatmap=False)
    # Explaining must not change the prediction.
    plain = predictor.predict(noise_image())
    assert [f.probabilities for f in plain] == [f.probabilities for f in faces]


def test_occlusion_points_at_the_evidence():
    # A "model" whose class-0 probability is the brightness of one 4x4 patch: hiding that patch,
    # and only that patch, lowers it, so the map must be hottest there and cold far from it.
    size = 16

    def probabilities(batch):
        evidence = batch[:, 0, 10:14, 2:6].mean(axis=(1, 2))
        p0 = 1 / (1 + np.exp(-4 * (evidence - 0.5)))
        return np.stack([p0, 1 - p0], axis=1)

    batch = np.zeros((1, 3, size, size), np.float32)
    batch[0, 0, 10:14, 2:6] = 1.0
    cam = occlusion_maps(probabilities, batch, np.array([0]))[0]
    assert cam.shape == (size, size) and cam.max() == pytest.approx(1.0)
    assert cam[10:14, 2:6].mean() > 0.8
    assert cam[0:4, 10:16].max() == pytest.approx(0.0)


def test_occlusion_runs_on_the_backend_alone(tiny_model_dir):
    # The heatmap is forward passes of the same backend: no network, no gradients, any runtime.
    backend = CountingBackend(Predictor.load(tiny_model_dir, detector="none").backend)
    assert backend.name == "onnxruntime"
    faces = Predictor(backend, TwoFaces()).predict(noise_image(), explain=True)
    assert all(face.heatmap_png for face in faces)
    assert len(backend.batches) > 2  # the prediction, then the occluded variants


def test_concurrent_predictions_match_sequential(tiny_model_dir):
    predictor = Predictor(PyTorchBackend(tiny_model_dir / "model.safetensors"), TwoFaces())
    images = [noise_image(seed=s) for s in range(6)]
    expected = [[f.probabilities for f in predictor.predict(im)] for im in images]
    results: dict[int, list] = {}

    def work(i):
        faces = predictor.predict(images[i], explain=i % 2 == 0)
        results[i] = [f.probabilities for f in faces]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, probs in enumerate(expected):
        for got, want in zip(results[i], probs):
            assert got == pytest.approx(want, abs=1e-6)


def test_missing_model_and_missing_bundled_model(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="no model at"):
        Predictor.load(tmp_path / "nowhere", detector="none")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        Predictor.load(tmp_path / "notes.txt", detector="none")
    import face_emotion.models.files as bundled

    monkeypatch.setattr(bundled, "BUNDLED_MODEL_DIR", tmp_path / "no-bundled-model")
    with pytest.raises(ModelLoadError, match="no bundled default model.*--model"):
        Predictor.load(None, detector="none")


def test_unknown_detector_is_a_clear_error(tiny_model_dir):
    pytest.importorskip("face_emotion.faces")
    with pytest.raises(ValueError, match="unknown face detector"):
        Predictor.load(tiny_model_dir, detector="no-such-detector")


@pytest.fixture(scope="module")
def default_detector():
    faces = pytest.importorskip("face_emotion.faces")
    try:
        return faces.create_detector()
    except faces.DetectorUnavailableError as error:
        pytest.skip(f"default face detector unavailable: {error}")


def test_real_detector_finds_the_astronaut_and_no_face_in_coffee(tiny_model_dir, default_detector):
    skimage_data = pytest.importorskip("skimage.data")
    predictor = Predictor.load(tiny_model_dir, detector=default_detector)
    faces = predictor.predict(Image.fromarray(skimage_data.astronaut()))
    assert len(faces) >= 1
    box = faces[0].box
    # Eileen Collins' face lies around x 180-270, y 60-180 of the 512 x 512 image.
    assert 170 <= box.x + box.width / 2 <= 280 and 60 <= box.y + box.height / 2 <= 180
    assert sum(faces[0].probabilities.values()) == pytest.approx(1.0)
    assert [f.box.area for f in faces] == sorted((f.box.area for f in faces), reverse=True)
    assert predictor.predict(Image.fromarray(skimage_data.coffee())) == []
