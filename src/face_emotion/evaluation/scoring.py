"""Run a model over samples and score it; shared by `train` (test split) and `evaluate`."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.utils.data import DataLoader

from face_emotion.data.datamodule import FaceDataset, ImageLoader, load_whole_image
from face_emotion.data.scan import Sample
from face_emotion.evaluation.metrics import classification_metrics
from face_emotion.models.spec import PreprocessSpec
from face_emotion.transforms import eval_transform


@torch.inference_mode()
def collect_logits(
    network: nn.Module,
    samples: list[Sample],
    classes: list[str],
    preprocess: PreprocessSpec,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    loader: ImageLoader = load_whole_image,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, C), targets (N,)) over ``samples``, in order, with the one eval transform."""
    dataset = FaceDataset(samples, classes, eval_transform(preprocess), loader)
    batches = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch", leave=False)
    network.eval()
    device = next(network.parameters()).device
    logits, targets = [], []
    for images, labels in batches:
        logits.append(network(images.to(device)).float().cpu())
        targets.append(labels)
    if not logits:
        return torch.empty(0, len(classes)), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(targets)


def per_source_metrics(probs: torch.Tensor, targets: torch.Tensor, samples: list[Sample], classes: list[str]) -> dict:
    """Metrics per dataset folder, when samples came from more than one."""
    index = defaultdict(list)
    for i, sample in enumerate(samples):
        index[sample.source].append(i)
    if len(index) < 2:
        return {}
    return {
        source: classification_metrics(probs[rows], targets[rows], classes)
        for source, rows in sorted(index.items())
    }
