"""Explanations without gradients: occlusion sensitivity (Zeiler & Fergus 2014) on any backend.

A grey square slides over the crop; how much the predicted emotion's probability drops with each
part hidden is that part's importance. Only forward passes: the same ONNX Runtime session that
answers predictions explains them, so a server worker never imports torch (Grad-CAM needs the
PyTorch network, which stays resident in every worker that draws one heatmap).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# The square hides two fifths of the crop's side and moves by an eighth: 6 x 6 = 36 variants per
# face, one backend batch. A patch must hide enough of a smile to change the answer, and the
# bundled model reads smiles from much of the face (how the size was chosen: docs/default-model.md,
# "Heatmaps").
PATCH_FRACTION = 2 / 5
STRIDE_FRACTION = 1 / 8
_CHUNK = 64  # variants per backend call: bounds memory for large crops and many faces


def occlusion_maps(probabilities: Callable[[np.ndarray], np.ndarray], batch: np.ndarray,
                   class_index: np.ndarray) -> np.ndarray:
    """(N, S, S) maps in [0, 1] for a normalised (N, 3, S, S) ``batch``; map i explains class_index[i].

    ``probabilities``: batch -> (N, classes) probabilities (Predictor.probabilities). The square is
    filled with 0, the dataset mean after normalisation: a neutral grey, not black.
    """
    count, _, size, _ = batch.shape
    patch = max(1, round(size * PATCH_FRACTION))
    stride = max(1, round(size * STRIDE_FRACTION))
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    positions = [(y, x) for y in starts for x in starts]
    base = probabilities(batch)[np.arange(count), class_index]
    maps = np.zeros((count, size, size), np.float64)
    cover = np.zeros((size, size), np.float64)
    for y, x in positions:
        cover[y:y + patch, x:x + patch] += 1
    for i in range(count):
        drops = []
        for start in range(0, len(positions), _CHUNK):
            chunk = positions[start:start + _CHUNK]
            variants = np.repeat(batch[i:i + 1], len(chunk), axis=0)
            for k, (y, x) in enumerate(chunk):
                variants[k, :, y:y + patch, x:x + patch] = 0.0
            drops.append(base[i] - probabilities(variants)[:, class_index[i]])
        for (y, x), drop in zip(positions, np.concatenate(drops)):
            maps[i, y:y + patch, x:x + patch] += drop
    maps = np.maximum(maps / cover, 0.0)  # a part whose hiding raises the answer is not evidence for it
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)
