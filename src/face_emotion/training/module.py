"""The LightningModule: network, loss and optimiser. The Trainer owns the loop and devices."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class EmotionClassifier(pl.LightningModule):
    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        *,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        plateau_patience: int = 2,
        plateau_factor: float = 0.3,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.train_acc = MulticlassAccuracy(num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, targets, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing
        )

    def training_step(self, batch, batch_idx):
        images, targets = batch
        logits = self(images)
        loss = self._loss(logits, targets)
        self.train_acc(logits, targets)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        logits = self(images)
        # Unweighted, unsmoothed loss: the plateau scheduler should see the true validation NLL.
        self.log("val_loss", F.cross_entropy(logits, targets), prog_bar=True, sync_dist=True)
        self.val_acc(logits, targets)
        self.val_f1(logits, targets)
        self.log("val_acc", self.val_acc, prog_bar=True)
        self.log("val_macro_f1", self.val_f1, prog_bar=True)

    def configure_optimizers(self):
        # Only trainable parameters: head-first fine-tuning adds the backbone as a new group later.
        params = [p for p in self.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, mode="min", factor=self.hparams.plateau_factor,
            patience=self.hparams.plateau_patience, min_lr=1e-7,
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
