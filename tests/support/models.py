"""Complete model folders with random weights: enough for plumbing tests and speed benchmarks."""

from __future__ import annotations

from pathlib import Path

TINY_CLASSES = ("anger", "happiness", "sadness")


def make_tiny_model(out_dir: Path, classes=TINY_CLASSES, image_size: int = 32, arch: str = "resnet18",
                    color_mode: str = "rgb", temperature: float = 1.5, seed: int = 0,
                    name: str = "tiny-test-model", dropout: float = 0.2, training: dict | None = None) -> Path:
    """An untrained (random) but complete model folder (model.safetensors + model.json); ``training``:
    the spec's training record (e.g. train_sha256_prefixes)."""
    import torch

    from face_emotion.models.backbones import create_network, get_backbone
    from face_emotion.models.spec import ModelSpec, PreprocessSpec
    from face_emotion.models.store import save_model

    torch.manual_seed(seed)
    backbone = get_backbone(arch)
    network = create_network(arch, len(classes), dropout, weights=None).eval()
    spec = ModelSpec(
        architecture=arch, classes=tuple(classes), temperature=temperature, name=name,
        preprocess=PreprocessSpec(image_size=image_size, color_mode=color_mode, mean=backbone.mean, std=backbone.std),
        dropout=dropout, training=dict(training or {}),
    )
    save_model(network, spec, out_dir)
    return out_dir
