"""Callbacks: staged unfreezing (head first, then the whole network)."""

from __future__ import annotations

import time

from pytorch_lightning.callbacks import BaseFinetuning, Callback
from torch import nn


class HeadFirstFinetuning(BaseFinetuning):
    """Train only the new head for ``head_epochs`` epochs, then the whole network.

    A random head on top of pretrained features sends large gradients into the backbone in the
    first steps and damages the features it was meant to reuse; warming the head first avoids it.
    """

    def __init__(self, head_name: str, head_epochs: int, backbone_lr_ratio: float = 1.0):
        super().__init__()
        self.head_name = head_name
        self.head_epochs = head_epochs
        self.backbone_lr_ratio = backbone_lr_ratio

    def _backbone(self, pl_module) -> list[nn.Module]:
        network = pl_module.network
        return [module for name, module in network.named_children() if name != self.head_name]

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(self._backbone(pl_module), train_bn=False)

    def finetune_function(self, pl_module, current_epoch: int, optimizer) -> None:
        if current_epoch == self.head_epochs:
            lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_ratio
            self.unfreeze_and_add_param_group(self._backbone(pl_module), optimizer, lr=lr, train_bn=True)


class EpochReport(Callback):
    """One line per epoch on stdout, for runs without a progress bar (logs, CI, nohup)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._started = time.time()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.time()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        shown = ("train_loss_epoch", "val_loss", "val_acc", "val_macro_f1")
        values = "  ".join(f"{k} {float(logged[k]):.4f}" for k in shown if k in logged)
        print(f"epoch {trainer.current_epoch + 1}/{self.epochs}: {values}  ({time.time() - self._started:.0f} s)",
              flush=True)
