"""Samples -> batches. The DataModule owns the data and their transforms (Lightning's split)."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from face_emotion.data.face_crops import load_whole_image
from face_emotion.data.scan import Sample
from face_emotion.models.spec import PreprocessSpec
from face_emotion.transforms import AugmentSettings, eval_transform, train_transform

ImageLoader = Callable[[Sample], Image.Image]


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


def class_weights(samples: list[Sample], classes: list[str], power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights (raised to ``power``), normalised to mean 1 (so the loss scale does not change)."""
    counts = Counter(s.label for s in samples)
    weights = torch.tensor([1.0 / max(counts.get(c, 0), 1) ** power for c in classes])
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
        if train:
            transform = train_transform(self.preprocess, strength=self.augment)
        else:
            transform = eval_transform(self.preprocess)
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


class _IndexBatches(Dataset):
    """A "dataset" whose keys are whole batches of view indices: the bank does the rest."""

    def __len__(self) -> int:  # unused: a batch sampler drives it
        return 0

    def __getitem__(self, indices) -> torch.Tensor:
        return torch.as_tensor(indices, dtype=torch.long)


class _EpochViews(torch.utils.data.Sampler):
    """Each epoch, every training sample once (or drawn by class weight), in one of its views.

    A sample with both framings shows its given view with probability ``given_p``; batches of
    view indices come out shuffled.
    """

    def __init__(self, views_of: list[list[int]], kinds, batch_size: int, *, given_p: float, weights=None,
                 drop_lone: bool = True, seed: int = 0):
        self.views_of = views_of
        self.kinds = kinds
        self.batch_size = batch_size
        self.given_p = given_p
        self.weights = weights
        self.drop_lone = drop_lone
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.views_of)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest > 1 or (rest == 1 and not self.drop_lone) else 0)

    def __iter__(self):
        from face_emotion.data.crop_bank import GIVEN

        n = len(self.views_of)
        if self.weights is not None:
            order = torch.multinomial(self.weights, n, replacement=True, generator=self.generator).tolist()
        else:
            order = torch.randperm(n, generator=self.generator).tolist()
        coins = torch.rand(n, generator=self.generator).tolist()
        chosen = []
        for sample, coin in zip(order, coins):
            views = self.views_of[sample]
            if len(views) == 1:
                chosen.append(views[0])
            else:
                given = [v for v in views if self.kinds[v] == GIVEN]
                other = [v for v in views if self.kinds[v] != GIVEN]
                chosen.append((given if coin < self.given_p else other)[0])
        for start in range(0, n, self.batch_size):
            batch = chosen[start : start + self.batch_size]
            if len(batch) == 1 and self.drop_lone and n > 1:
                continue  # BatchNorm cannot train on a lone image (see FaceDataModule)
            yield batch


class CropBankDataModule(pl.LightningDataModule):
    """Batches from a CropBank: crops decoded once, moved to the training device once, and
    augmented there a batch at a time (data.augment). Loaders yield only view indices.

    Batches are dicts: ``images``, ``labels`` (class index), and where given ``targets`` (a class
    distribution per image: soft labels) and ``teacher`` (a bigger model's logits: distillation).
    Validation and test read every view of their samples without augmentation.
    """

    def __init__(
        self,
        bank,
        splits: dict[str, list[Sample]],
        classes: list[str],
        preprocess: PreprocessSpec,
        *,
        batch_size: int = 32,
        augment: str = "default",
        zoom_out: float = 1.0,
        given_p: float = 0.5,
        balanced_sampling: bool = False,
        soft_targets: dict | None = None,
        teacher_logits: dict | None = None,
        label_smoothing: float = 0.0,
        precision_dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ):
        super().__init__()
        from face_emotion.data.crop_bank import lookup

        self.bank = bank
        self.classes = classes
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.settings = AugmentSettings.named(augment, zoom_out)
        self.given_p = given_p
        self.balanced_sampling = balanced_sampling
        self.seed = seed
        self.dtype = precision_dtype
        index_of = {s.digest: i for i, s in enumerate(bank.samples)}
        self.split_views: dict[str, list[list[int]]] = {}
        views_by_sample: dict[int, list[int]] = {}
        for view, owner in enumerate(bank.sample_index.tolist()):
            views_by_sample.setdefault(owner, []).append(view)
        for name, samples in splits.items():
            self.split_views[name] = [views_by_sample[index_of[s.digest]] for s in samples
                                      if s.digest in index_of and index_of[s.digest] in views_by_sample]
        self.split_samples = {
            name: [s for s in samples if s.digest in index_of and index_of[s.digest] in views_by_sample]
            for name, samples in splits.items()
        }
        class_index = {c: i for i, c in enumerate(classes)}
        owners = bank.samples
        self.labels = torch.tensor([class_index[s.label] for s in owners], dtype=torch.long)
        n_classes = len(classes)

        def table_rows(table: dict | None, fallback) -> torch.Tensor | None:
            if not table:
                return None
            rows = []
            for sample, label in zip(owners, self.labels.tolist()):
                row = lookup(table, sample.digest)
                rows.append(fallback(label) if row is None else row)
            return torch.tensor(np.stack(rows), dtype=torch.float32)

        def smoothed(label: int) -> np.ndarray:
            row = np.full(n_classes, label_smoothing / n_classes, np.float32)
            row[label] += 1.0 - label_smoothing
            return row

        targets = table_rows(soft_targets, smoothed)
        if targets is not None:
            targets = targets.clamp_min(0)
            targets = targets / targets.sum(dim=1, keepdim=True).clamp_min(1e-12)
        self.targets = targets
        # Files the teacher never saw get no distillation term (NaN rows are masked in the loss).
        self.teacher = table_rows(teacher_logits, lambda label: np.full(n_classes, np.nan, np.float32))
        self._on_device: dict = {}

    def _device_tensors(self, device: torch.device) -> dict:
        key = str(device)
        if key not in self._on_device:
            bank = self.bank
            self._on_device = {key: {
                "pixels": torch.from_numpy(bank.pixels).to(device),
                "owner": torch.from_numpy(bank.sample_index).to(device),
                "labels": self.labels.to(device),
                "targets": None if self.targets is None else self.targets.to(device),
                "teacher": None if self.teacher is None else self.teacher.to(device),
            }}
        return self._on_device[key]

    def _loader(self, split: str, train: bool) -> DataLoader:
        views_of = self.split_views[split]
        if train:
            weights = None
            if self.balanced_sampling:
                per_class = class_weights(self.split_samples[split], self.classes)
                index = {c: i for i, c in enumerate(self.classes)}
                weights = torch.tensor([float(per_class[index[s.label]]) for s in self.split_samples[split]])
            sampler = _EpochViews(views_of, self.bank.kind, self.batch_size, given_p=self.given_p,
                                  weights=weights, seed=self.seed)
        else:
            flat = [v for views in views_of for v in views]
            sampler = [flat[i : i + self.batch_size] for i in range(0, len(flat), self.batch_size)]
        return DataLoader(_IndexBatches(), sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        from face_emotion.data.augment import normalise, random_erase, sample_crops

        views = batch
        tensors = self._device_tensors(views.device)
        training = self.trainer is not None and self.trainer.training
        settings = self.settings if training else AugmentSettings.named("none")
        images = sample_crops(tensors["pixels"][views], int(self.preprocess.image_size), self.bank.core_fraction,
                              settings)
        images = normalise(images, self.preprocess.mean, self.preprocess.std, self.preprocess.color_mode == "grayscale")
        if training:
            images = random_erase(images, settings.erase_p, settings.erase_area)
        owners = tensors["owner"][views]
        out = {"images": images.to(self.dtype).contiguous(memory_format=torch.channels_last),
               "labels": tensors["labels"][owners]}
        if tensors["targets"] is not None:
            out["targets"] = tensors["targets"][owners]
        if tensors["teacher"] is not None:
            out["teacher"] = tensors["teacher"][owners]
        return out
