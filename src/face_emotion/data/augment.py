"""Batch augmentation on the device, for crops held in a CropBank.

One affine per image (zoom in and out, roll, shift, mirror) sampled bilinearly from the stored
crop straight to the model's input size, then brightness, contrast and occlusion: the changes of
the per-image PIL augmentation (transforms.train_transform), with the same strengths (one
transforms.AugmentSettings), applied to a whole batch at once where the batch lives, so a GPU
never waits on a CPU loader. Saturation is left alone here.

With every random part at its neutral value the output equals the eval transform of the stored
crop's core (a bilinear resize of the detail-level crop to the input size), so training and
inference see the same pixels for the same framing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from face_emotion.transforms import AugmentSettings


def to_float_images(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, S) grey or (B, S, S, 3) RGB -> float (B, C, S, S) in [0, 1]."""
    images = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels.permute(0, 3, 1, 2)
    return images.float().div_(255.0)


def sample_crops(
    pixels: torch.Tensor,
    out_size: int,
    core_fraction: float,
    settings: AugmentSettings,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Stored crops -> float (B, C, out, out) in [0, 1], each through its own random affine.

    pixels: uint8 (B, S, S) or (B, S, S, 3); the model's crop is the central ``core_fraction``.
    """
    images = to_float_images(pixels)
    b, device = images.shape[0], images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(b, generator=generator, device=device) * (high - low) + low

    zoom = uniform(*settings.zoom)
    angle = uniform(-settings.rotation_degrees, settings.rotation_degrees) * (math.pi / 180.0)
    shift_x = uniform(-settings.shift, settings.shift)
    shift_y = uniform(-settings.shift, settings.shift)
    # affine_grid maps output coordinates in [-1, 1] to input coordinates in [-1, 1]; the crop's
    # core spans [-core_fraction, core_fraction] of the stored square.
    scale = zoom * core_fraction
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    mirror = torch.ones(b, device=device)
    if settings.flip:
        mirror = torch.where(torch.rand(b, generator=generator, device=device) < 0.5, -mirror, mirror)
    theta = torch.stack(
        [
            torch.stack([cos * mirror, -sin, shift_x * 2 * core_fraction], dim=1),
            torch.stack([sin * mirror, cos, shift_y * 2 * core_fraction], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [b, images.shape[1], out_size, out_size], align_corners=False)
    out = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    if settings.brightness or settings.contrast:
        # As torchvision's ColorJitter: brightness scales, contrast blends with the image's mean grey.
        bright = uniform(1 - settings.brightness, 1 + settings.brightness).view(b, 1, 1, 1)
        contrast = uniform(1 - settings.contrast, 1 + settings.contrast).view(b, 1, 1, 1)
        out = (out * bright).clamp_(0, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean).clamp_(0, 1)
    return out


def normalise(images: torch.Tensor, mean, std, grey: bool) -> torch.Tensor:
    """[0, 1] images -> the model's normalised 3-channel input (grey replicated, as model_input)."""
    if grey and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s


def random_erase(images: torch.Tensor, p: float, area: tuple[float, float],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Blank one random rectangle (aspect 0.3-3.3) in a fraction ``p`` of the images, with zeros
    of the normalised input, as torchvision's RandomErasing does by default."""
    if p <= 0:
        return images
    b, _, h, w = images.shape
    device = images.device
    chosen = torch.rand(b, generator=generator, device=device) < p
    fraction = torch.rand(b, generator=generator, device=device) * (area[1] - area[0]) + area[0]
    log_ratio = torch.rand(b, generator=generator, device=device) * (math.log(3.3) - math.log(0.3)) + math.log(0.3)
    ratio = torch.exp(log_ratio)
    eh = (torch.sqrt(fraction * h * w * ratio)).clamp(1, h)
    ew = (torch.sqrt(fraction * h * w / ratio)).clamp(1, w)
    top = torch.rand(b, generator=generator, device=device) * (h - eh)
    left = torch.rand(b, generator=generator, device=device) * (w - ew)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    rows = (ys >= top.view(b, 1, 1)) & (ys < (top + eh).view(b, 1, 1))
    columns = (xs >= left.view(b, 1, 1)) & (xs < (left + ew).view(b, 1, 1))
    mask = rows & columns
    mask &= chosen.view(b, 1, 1)
    return images.masked_fill(mask.unsqueeze(1), 0.0)
