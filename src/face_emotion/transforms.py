"""The one eval transform, and the training augmentation built around it.

``eval_transform(spec)`` is used by evaluate, predict, export checks and serve alike: a face crop
(PIL RGB) -> normalised float tensor. Training ends in the same tail, so what the model sees at
inference is exactly what it was validated on.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from face_emotion.models.spec import PreprocessSpec


def _tail(spec: PreprocessSpec) -> list:
    steps = []
    if spec.color_mode == "grayscale":
        # Grey replicated to three channels keeps pretrained RGB stems usable and makes colour
        # and greyscale sources (AffectNet vs FER2013) look alike to the network.
        steps.append(T.Grayscale(num_output_channels=3))
    steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(spec.mean), list(spec.std))]
    return steps


def eval_transform(spec: PreprocessSpec) -> T.Compose:
    size = int(spec.image_size)
    return T.Compose(
        [T.Resize((size, size), interpolation=InterpolationMode.BILINEAR, antialias=True), *_tail(spec)]
    )


def train_transform(spec: PreprocessSpec, *, strength: str = "default") -> T.Compose:
    """Augmentation of the original system: random crop, rotation, colour jitter, horizontal flip."""
    size = int(spec.image_size)
    if strength == "none":
        return eval_transform(spec)
    light = strength == "light"
    steps = [
        T.RandomResizedCrop(
            (size, size), scale=(0.85 if light else 0.7, 1.0), ratio=(0.9, 1.1),
            interpolation=InterpolationMode.BILINEAR, antialias=True,
        ),
        T.RandomHorizontalFlip(),
        T.RandomRotation(10 if light else 15, interpolation=InterpolationMode.BILINEAR),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.0 if spec.color_mode == "grayscale" else 0.3),
        *_tail(spec),
    ]
    if not light:
        # Occlusion robustness (hands, glasses, masks) at almost no cost.
        steps.append(T.RandomErasing(p=0.25, scale=(0.02, 0.12)))
    return T.Compose(steps)
