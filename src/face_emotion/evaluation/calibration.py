"""Temperature scaling (Guo et al., 2017): one scalar that makes softmax confidences honest.

Fitted during training only (it needs torch's optimiser); logits and targets may come as NumPy
arrays from the scoring path or as tensors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, *, max_iter: int = 100) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on held-out data."""
    if len(targets) == 0:
        return 1.0
    # clone(): logits often come from inference_mode, whose tensors autograd refuses.
    logits, targets = torch.as_tensor(logits).detach().float().clone(), torch.as_tensor(targets).long().clone()
    log_t = torch.zeros(1, requires_grad=True)  # optimise log T so T stays positive
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimiser.step(closure)
    temperature = float(log_t.detach().exp())
    return min(max(temperature, T_MIN), T_MAX)  # a degenerate fit must not blow up confidences


T_MIN, T_MAX = 0.05, 20.0


def choose_temperature(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """Fit T on validation and keep it only where it helps there.

    Returns {"temperature", "val_ece_before", "val_ece_after", "note"}: T = 1 when scaling does
    not lower validation ECE, and a note when the fit ran into a bound (a sign of a collapsed or
    degenerate model that the user should hear about, not a number to print silently).
    """
    from face_emotion.evaluation.metrics import expected_calibration_error
    from face_emotion.inference.backends import softmax

    logits, targets = np.asarray(logits, dtype=np.float32), np.asarray(targets, dtype=np.int64)
    before = expected_calibration_error(softmax(logits), targets)
    fitted = fit_temperature(logits, targets)
    after = expected_calibration_error(softmax(logits, fitted), targets)
    note = ""
    if fitted in (T_MIN, T_MAX):
        note = (f"the fit hit its bound ({fitted:g}): the model's confidences carry little information "
                f"(collapsed or degenerate training?)")
    if not after < before:
        note = (note + "; " if note else "") + (
            f"scaling by {fitted:.3f} did not lower validation ECE ({before:.4f} -> {after:.4f}), kept T = 1")
        return {"temperature": 1.0, "fitted_temperature": fitted, "val_ece_before": before, "val_ece_after": before,
                "note": note}
    return {"temperature": fitted, "val_ece_before": before, "val_ece_after": after, "note": note}
