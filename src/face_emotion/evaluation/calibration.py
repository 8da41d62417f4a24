"""Temperature scaling (Guo et al., 2017): one scalar that makes softmax confidences honest."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, *, max_iter: int = 100) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on held-out data."""
    if len(targets) == 0:
        return 1.0
    # clone(): logits often come from inference_mode, whose tensors autograd refuses.
    logits, targets = logits.detach().float().clone(), targets.long().clone()
    log_t = torch.zeros(1, requires_grad=True)  # optimise log T so T stays positive
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimiser.step(closure)
    temperature = float(log_t.detach().exp())
    return min(max(temperature, 0.05), 20.0)  # a degenerate fit must not blow up confidences
