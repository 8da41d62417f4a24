"""Samples -> batches. The DataModule owns the data and their transforms (Lightning's split)."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from face_emotion.data.scan import Sample
from face_emotion.imageio import load_image
from face_emotion.models.spec import PreprocessSpec
from face_emotion.transforms import eval_transform, train_transform

ImageLoader = Callable[[Sample], Image.Image]


def load_whole_image(sample: Sample) -> Image.Image:
    """Pre-cropped datasets: the whole file is the face."""
    return load_image(sample.path, max_pixels=None)


class FaceDataset(Dataset):
    def __init__(self, samples: list[Sample], classes: list[str], transform, loader: ImageLoader = load_whole_image):
        self.samples = samples
        self.class_to_index = {name: i for i, name in enumerate(classes)}
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        return self.transform(self.loader(sample)), self.class_to_index[sample.label]


def class_weights(samples: list[Sample], classes: list[str]) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1 (so the loss scale does not change)."""
    counts = Counter(s.label for s in samples)
    weights = torch.tensor([1.0 / max(counts.get(c, 0), 1) for c in classes])
    return weights * len(classes) / weights.sum()


class FaceDataModule(pl.LightningDataModule):
    def __init__(
        self,
        splits: dict[str, list[Sample]],
        classes: list[str],
        preprocess: PreprocessSpec,
        *,
        batch_size: int = 32,
        num_workers: int = 0,
        augment: str = "default",
        balanced_sampling: bool = False,
        loader: ImageLoader = load_whole_image,
        seed: int = 0,
    ):
        super().__init__()
        self.splits = splits
        self.classes = classes
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.balanced_sampling = balanced_sampling
        self.loader = loader
        self.seed = seed

    def _dataset(self, split: str, train: bool) -> FaceDataset:
        transform = train_transform(self.preprocess, strength=self.augment) if train else eval_transform(self.preprocess)
        return FaceDataset(self.splits[split], self.classes, transform, self.loader)

    def _loader(self, dataset: FaceDataset, *, shuffle: bool, sampler=None, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=drop_last,
        )

    def _lone_last_batch(self, n: int) -> bool:
        """Whether the last training batch (per process) would hold a single image.

        BatchNorm cannot train on one image whose feature map is 1 x 1 (a 32 px input at ResNet's
        last block), so that batch is dropped; shuffling lets the image back in the next epoch.
        """
        world = max(int(getattr(self.trainer, "world_size", 1) or 1), 1) if self.trainer is not None else 1
        per_process = -(-n // world)
        return per_process > 1 and per_process % self.batch_size == 1

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train", train=True)
        sampler = None
        if self.balanced_sampling:
            per_class = class_weights(dataset.samples, self.classes)
            weights = [float(per_class[dataset.class_to_index[s.label]]) for s in dataset.samples]
            generator = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)
        return self._loader(dataset, shuffle=True, sampler=sampler, drop_last=self._lone_last_batch(len(dataset)))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val", train=False), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test", train=False), shuffle=False)
