"""The eval transform is PIL + numpy, equals the torchvision pipeline it replaced, and training
ends in the same tail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from face_emotion.models.spec import PreprocessSpec
from face_emotion.transforms import EvalTransform, ModelInput, eval_transform, model_input, train_transform


def torchvision_eval(spec: PreprocessSpec) -> T.Compose:
    """The eval transform as it was written with torchvision before it moved to numpy."""
    size = int(spec.image_size)
    steps = [T.Resize((size, size), interpolation=InterpolationMode.BILINEAR, antialias=True)]
    if spec.color_mode == "grayscale":
        steps.append(T.Grayscale(num_output_channels=3))
    steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(spec.mean), list(spec.std))]
    return T.Compose(steps)


def photo_crop(width: int, height: int, seed: int = 0) -> Image.Image:
    from skimage import data

    rng = np.random.default_rng(seed)
    image = Image.fromarray(data.astronaut()).crop((150, 20, 350, 220)).resize((width, height))
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, size=(height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("color_mode,mean,std", [
    ("grayscale", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ("rgb", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
@pytest.mark.parametrize("image_size", [48, 64, 96, 112])
@pytest.mark.parametrize("crop_size", [(37, 41), (96, 96), (233, 200)])
def test_eval_transform_equals_the_torchvision_pipeline(color_mode, mean, std, image_size, crop_size):
    spec = PreprocessSpec(image_size=image_size, color_mode=color_mode, mean=mean, std=std)
    crop = photo_crop(*crop_size)
    ours = eval_transform(spec)(crop)
    reference = torchvision_eval(spec)(crop).numpy()
    assert ours.dtype == np.float32 and ours.shape == (3, image_size, image_size)
    assert ours.flags.c_contiguous
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


def test_grayscale_channels_are_one_grey_and_rgb_channels_differ():
    crop = photo_crop(80, 80)
    same = {"mean": (0.5,) * 3, "std": (0.25,) * 3}
    grey = eval_transform(PreprocessSpec(image_size=64, color_mode="grayscale", **same))(crop)
    colour = eval_transform(PreprocessSpec(image_size=64, color_mode="rgb", **same))(crop)
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    assert not np.allclose(colour[0], colour[2])


def test_training_ends_in_the_eval_tail():
    spec = PreprocessSpec(image_size=64, color_mode="grayscale", mean=(0.5,) * 3, std=(0.5,) * 3)
    for strength in ("default", "light"):
        steps = train_transform(spec, strength=strength).transforms
        tails = [i for i, step in enumerate(steps) if isinstance(getattr(step, "step", None), ModelInput)]
        assert len(tails) == 1, f"{strength}: one eval tail expected in {steps}"
        # Only occlusion (tensor-level) may follow the tail.
        assert all(isinstance(step, T.RandomErasing) for step in steps[tails[0] + 1:])
        # The tail on an image already at the model's size is exactly the eval transform.
        crop = photo_crop(64, 64, seed=3)
        tail = steps[tails[0]]
        np.testing.assert_array_equal(tail(crop).numpy(), eval_transform(spec)(crop))


def test_training_with_identity_augmentation_equals_eval(monkeypatch):
    """Every random step forced to do nothing: the training sample is the eval input, bit for bit."""
    spec = PreprocessSpec(image_size=48, color_mode="rgb")
    crop = photo_crop(90, 70, seed=5)
    pipeline = train_transform(spec, strength="light")
    identity_steps = []
    for step in pipeline.transforms:
        if isinstance(step, T.RandomResizedCrop):
            identity_steps.append(T.Resize((48, 48), interpolation=InterpolationMode.BILINEAR, antialias=True))
        elif isinstance(step, (T.RandomHorizontalFlip, T.RandomRotation, T.ColorJitter)):
            continue
        else:
            identity_steps.append(step)
    sample = T.Compose(identity_steps)(crop)
    assert isinstance(sample, torch.Tensor) and sample.dtype == torch.float32
    np.testing.assert_array_equal(sample.numpy(), eval_transform(spec)(crop))


def test_train_transform_none_is_the_eval_transform_as_a_tensor():
    spec = PreprocessSpec(image_size=32, color_mode="grayscale")
    crop = photo_crop(50, 60)
    sample = train_transform(spec, strength="none")(crop)
    assert isinstance(sample, torch.Tensor)
    np.testing.assert_array_equal(sample.numpy(), eval_transform(spec)(crop))


def test_augmented_samples_are_tensors_of_the_model_size():
    spec = PreprocessSpec(image_size=40, color_mode="rgb")
    torch.manual_seed(0)
    sample = train_transform(spec)(photo_crop(100, 80))
    assert isinstance(sample, torch.Tensor) and tuple(sample.shape) == (3, 40, 40)


def test_eval_transform_pickles_for_dataloader_workers():
    import pickle

    spec = PreprocessSpec(image_size=32)
    transform = pickle.loads(pickle.dumps(eval_transform(spec)))
    assert isinstance(transform, EvalTransform)
    crop = photo_crop(40, 40)
    np.testing.assert_array_equal(transform(crop), model_input(crop.resize((32, 32), Image.Resampling.BILINEAR), spec))


def test_detail_level_makes_a_sharp_big_crop_look_like_a_small_one_in_eval_and_training():
    from face_emotion.transforms import DetailLevel

    spec = PreprocessSpec(image_size=80, color_mode="grayscale", mean=(0.5,) * 3, std=(0.5,) * 3, face_resolution=48)
    sharp = photo_crop(400, 400, seed=7)
    small = sharp.resize((48, 48), Image.Resampling.BILINEAR)
    # A 400 px crop reaches the model with the detail of a 48 px one: the same input.
    np.testing.assert_allclose(eval_transform(spec)(sharp), eval_transform(spec)(small), atol=1e-6)
    plain = PreprocessSpec(image_size=80, color_mode="grayscale", mean=(0.5,) * 3, std=(0.5,) * 3)
    assert np.abs(eval_transform(plain)(sharp) - eval_transform(plain)(small)).max() > 0.1
    # Crops already below the detail level are not touched; training starts with the same step.
    tiny = photo_crop(40, 40, seed=8)
    assert DetailLevel(spec)(tiny).size == (40, 40)
    first = train_transform(spec).transforms[0]
    assert isinstance(first, DetailLevel) and first(sharp).size == (48, 48)


def test_both_training_paths_take_their_strengths_from_one_settings_object():
    """The PIL path (train_transform) and the device path (data.augment) share AugmentSettings."""
    from face_emotion.transforms import AugmentSettings

    spec = PreprocessSpec(image_size=40, color_mode="rgb")
    for strength in ("default", "light"):
        settings = AugmentSettings.named(strength)
        steps = {type(step): step for step in train_transform(spec, strength=strength).transforms}
        assert steps[T.RandomResizedCrop].scale == (settings.zoom[0] ** 2, 1.0)
        assert steps[T.RandomRotation].degrees == [-settings.rotation_degrees, settings.rotation_degrees]
        jitter = steps[T.ColorJitter]
        assert jitter.brightness == (1 - settings.brightness, 1 + settings.brightness)
        assert jitter.contrast == (1 - settings.contrast, 1 + settings.contrast)
        erasing = steps.get(T.RandomErasing)
        if settings.erase_p:
            assert (erasing.p, erasing.scale) == (settings.erase_p, settings.erase_area)
        else:
            assert erasing is None
