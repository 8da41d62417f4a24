"""The one eval transform, and the training augmentation built around it.

``eval_transform(spec)`` is used by evaluate, predict, export checks and serve alike: a face crop
(PIL RGB) -> normalised float32 array (3, S, S). It is PIL + numpy only, so a serving process
never imports torch for it. Training augments the PIL crop with torchvision and then ends in the
same tail (:func:`model_input`), so what the model sees at inference is exactly what it was
validated on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from face_emotion.errors import InvalidArgumentError
from face_emotion.models.spec import PreprocessSpec

Transform = Callable[[Image.Image], np.ndarray]


@dataclass(frozen=True)
class AugmentSettings:
    """How strongly training changes a crop: the one home of these numbers for both data paths,
    the PIL one (:func:`train_transform`) and the batch one on the training device (data.augment).

    ``zoom`` is the side of the square shown over the side of the crop; the PIL path's random
    crop takes the square of it as its share of the area. ``shift`` moves the square (batch path;
    the PIL random crop places its square anywhere). ``saturation`` is for RGB models on the PIL
    path only.
    """

    zoom: tuple[float, float] = (0.84, 1.0)
    rotation_degrees: float = 15.0
    shift: float = 0.08  # of the crop's side, each axis
    flip: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    erase_p: float = 0.25  # occlusion: hands, glasses, masks
    erase_area: tuple[float, float] = (0.02, 0.12)
    saturation: float = 0.3

    @classmethod
    def named(cls, strength: str, zoom_out: float = 1.0) -> "AugmentSettings":
        """``default``, ``light`` (no occlusion, gentler geometry) or ``none`` (no change).

        zoom_out > 1 lets the shown square grow beyond the crop (a looser framing), which the
        batch path's stored context makes possible.
        """
        if strength == "none":
            return cls((1.0, 1.0), 0.0, 0.0, False, 0.0, 0.0, 0.0, saturation=0.0)
        if strength == "light":
            return cls((0.92, max(1.0, zoom_out)), 10.0, 0.05, True, 0.3, 0.3, 0.0)
        if strength != "default":
            raise InvalidArgumentError(f"augmentation must be default, light or none, not {strength!r}")
        return cls((0.84, max(1.0, zoom_out)))


def model_input(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """The tail shared by eval and training: an S x S PIL crop -> float32 (3, S, S), normalised.

    Computed as torchvision's ToImage -> ToDtype(float32, scale=True) -> Normalize does it
    (multiply by 1/255, subtract the mean, divide by the std, all in float32), so a model trained
    through torchvision's steps sees bit-for-bit the same input here.
    """
    if spec.color_mode == "grayscale":
        # Grey replicated to three channels keeps pretrained RGB stems usable and makes colour
        # and greyscale sources (AffectNet vs FER2013) look alike to the network. PIL's "L"
        # (ITU-R 601-2 luma) is what torchvision's Grayscale uses for PIL images.
        grey = np.asarray(image.convert("L"), dtype=np.float32)
        pixels = np.broadcast_to(grey[None], (3, *grey.shape))
    else:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
    scaled = pixels * np.float32(1.0 / 255.0)
    return np.ascontiguousarray((scaled - mean) / std, dtype=np.float32)


def detail_level(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """The crop brought to ``spec.face_resolution`` pixels a side (antialiased), if the model
    asks for it: the first step of both the eval and the training transform."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    side = spec.face_resolution
    if side is None or (image.width <= side and image.height <= side):
        return image  # already no finer than the detail level: enlarging adds nothing
    return image.resize((int(side), int(side)), Image.Resampling.BILINEAR)


def resize_crop(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """The crop -> S x S, bilinear with antialiasing (PIL's resize filters by the scale factor)."""
    size = int(spec.image_size)
    image = detail_level(image, spec)
    return image.resize((size, size), Image.Resampling.BILINEAR)


class EvalTransform:
    """A face crop (PIL) -> float32 (3, S, S) array: resize, then :func:`model_input`.

    A class rather than a closure so that DataLoader workers started by spawn can pickle it.
    """

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def __call__(self, image: Image.Image) -> np.ndarray:
        return model_input(resize_crop(image, self.spec), self.spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.spec.image_size}, color_mode={self.spec.color_mode!r})"


def eval_transform(spec: PreprocessSpec) -> Transform:
    """The one eval transform of a model: see :class:`EvalTransform`."""
    return EvalTransform(spec)


class _AsTensor:
    """A numpy-returning step as a torch tensor (for RandomErasing and the DataLoader)."""

    def __init__(self, step: Callable[[Image.Image], np.ndarray]) -> None:
        self.step = step

    def __call__(self, image: Image.Image):
        import torch

        return torch.from_numpy(self.step(image))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.step!r})"


class DetailLevel:
    """:func:`detail_level` as a transform step (picklable)."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def __call__(self, image: Image.Image) -> Image.Image:
        return detail_level(image, self.spec)


class ModelInput:
    """:func:`model_input` as a transform step: the tail that ends both eval and training."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def __call__(self, image: Image.Image) -> np.ndarray:
        return model_input(image, self.spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(color_mode={self.spec.color_mode!r})"


def train_transform(spec: PreprocessSpec, *, strength: str = "default"):
    """Per-image augmentation: random crop, mirror, rotation, colour jitter, occlusion.

    The strengths are :meth:`AugmentSettings.named`'s, as on the batch path. The augmentations work
    on the PIL crop; the result goes through the eval tail (:func:`model_input`), and only
    occlusion (RandomErasing) comes after it, on the tensor.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    size = int(spec.image_size)
    settings = AugmentSettings.named(strength)
    if strength == "none":
        # Still a tensor, as the DataLoader of training expects; the same numbers as eval.
        return T.Compose([_AsTensor(EvalTransform(spec))])
    steps = [
        DetailLevel(spec),
        T.RandomResizedCrop(
            (size, size), scale=(settings.zoom[0] ** 2, 1.0), ratio=(0.9, 1.1),
            interpolation=InterpolationMode.BILINEAR, antialias=True,
        ),
        T.RandomHorizontalFlip(0.5 if settings.flip else 0.0),
        T.RandomRotation(settings.rotation_degrees, interpolation=InterpolationMode.BILINEAR),
        T.ColorJitter(brightness=settings.brightness, contrast=settings.contrast,
                      saturation=0.0 if spec.color_mode == "grayscale" else settings.saturation),
        _AsTensor(ModelInput(spec)),
    ]
    if settings.erase_p > 0:
        steps.append(T.RandomErasing(p=settings.erase_p, scale=settings.erase_area))
    return T.Compose(steps)
