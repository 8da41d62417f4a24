"""Shared fixtures: tiny models and datasets built in tmp dirs, in seconds (helpers: tests/support)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.synthetic import make_learnable_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="tiny models are built with torch (the 'train' extra)")
    from support.models import make_tiny_model

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
    try:
        import torch
    except ImportError:  # the base install's test lane
        yield
        return

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
