"""Shared fixtures: tiny models and datasets built in tmp dirs, in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_learnable_dataset  # noqa: E402

TINY_CLASSES = ("anger", "happiness", "sadness")


def make_tiny_model(out_dir: Path, classes=TINY_CLASSES, image_size: int = 32, arch: str = "resnet18",
                    color_mode: str = "rgb", temperature: float = 1.5, seed: int = 0) -> Path:
    """An untrained (random) but complete model folder: fast, and enough for plumbing tests."""
    import torch

    from face_emotion.models.backbones import create_network, get_backbone
    from face_emotion.models.spec import ModelSpec, PreprocessSpec
    from face_emotion.models.store import save_model

    torch.manual_seed(seed)
    backbone = get_backbone(arch)
    network = create_network(arch, len(classes), 0.2, weights=None).eval()
    spec = ModelSpec(
        architecture=arch, classes=tuple(classes), temperature=temperature, name="tiny-test-model",
        preprocess=PreprocessSpec(image_size=image_size, color_mode=color_mode, mean=backbone.mean, std=backbone.std),
        dropout=0.2,
    )
    save_model(network, spec, out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def learnable_dataset(tmp_path_factory) -> Path:
    return make_learnable_dataset(tmp_path_factory.mktemp("learnable"), per_class=40)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Face-crop caches go to a temporary folder, never the user's ~/.cache."""
    import os

    previous = os.environ.get("FACE_EMOTION_CACHE")
    os.environ["FACE_EMOTION_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("FACE_EMOTION_CACHE", None)
    else:
        os.environ["FACE_EMOTION_CACHE"] = previous


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """These machines have 2 cores shared with other jobs: two OpenMP threads fighting for a busy
    core made tiny networks many times slower. One thread keeps the tests fast and stable."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
