"""The LightningModule: network, loss and optimiser. The Trainer owns the loop and devices."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class WarmupCosine:
    """Learning-rate factor per step: linear warm-up, then cosine down to zero at ``total``."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = total, warmup

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


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
        schedule: str = "plateau",
        distill_alpha: float = 0.5,
        distill_temperature: float = 2.0,
        head_name: str | None = None,
        backbone_lr_ratio: float = 1.0,
        l2sp: float = 0.0,
        trained_classes: list[int] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        # L2-SP (Li et al. 2018): pull the backbone towards the weights it started from, not
        # towards zero, so a few hundred photos adjust the features instead of overwriting them.
        self._start = {
            name: p.detach().clone() for name, p in network.named_parameters()
            if l2sp > 0 and not (head_name and name.startswith(head_name + "."))
        }
        # Classes the data has: the others (a started model's classes the user's photos lack)
        # are left out of the softmax while training, so their head rows keep what they knew.
        present = remap = None
        if trained_classes is not None and len(trained_classes) < num_classes:
            present = torch.tensor(sorted(trained_classes), dtype=torch.long)
            remap = torch.full((num_classes,), -100, dtype=torch.long)
            remap[present] = torch.arange(len(present))
        self.register_buffer("present", present, persistent=False)
        self.register_buffer("remap", remap, persistent=False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.train_acc = MulticlassAccuracy(num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def _loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        logits = logits.float()
        weights = self.class_weights
        if self.present is not None:
            logits, batch = logits[:, self.present], dict(batch)
            batch["labels"] = self.remap[batch["labels"]]
            if batch.get("targets") is not None:
                kept = batch["targets"][:, self.present]
                batch["targets"] = kept / kept.sum(dim=1, keepdim=True).clamp_min(1e-12)
            if batch.get("teacher") is not None:
                batch["teacher"] = batch["teacher"][:, self.present]
            weights = None if weights is None else weights[self.present]
        loss = self._data_loss(logits, batch, weights)
        if self._start:
            start = self._start
            if next(iter(start.values())).device != logits.device:
                self._start = start = {k: v.to(logits.device) for k, v in start.items()}
            drift = sum(((p - start[name]) ** 2).sum() for name, p in self.network.named_parameters() if name in start)
            loss = loss + 0.5 * self.hparams.l2sp * drift
        return loss

    def _data_loss(self, logits: torch.Tensor, batch: dict, weights: torch.Tensor | None) -> torch.Tensor:
        if batch.get("targets") is not None:
            # A class distribution per image (soft labels, e.g. FER+ annotator votes).
            loss = F.cross_entropy(logits, batch["targets"], weight=weights)
        else:
            loss = F.cross_entropy(logits, batch["labels"], weight=weights,
                                   label_smoothing=self.hparams.label_smoothing)
        teacher = batch.get("teacher")
        if teacher is None:
            return loss
        # Knowledge distillation (Hinton et al. 2015): match the teacher's softened distribution;
        # T^2 keeps the gradient scale independent of T. Images the teacher never saw (NaN rows)
        # take the plain loss alone.
        seen = ~torch.isnan(teacher).any(dim=1)
        if not bool(seen.any()):
            return loss
        t = self.hparams.distill_temperature
        kd = F.kl_div(
            F.log_softmax(logits[seen] / t, dim=1), F.log_softmax(teacher[seen].float() / t, dim=1),
            reduction="batchmean", log_target=True,
        ) * (t * t)
        alpha = self.hparams.distill_alpha * seen.float().mean()
        return (1 - alpha) * loss + alpha * kd

    @staticmethod
    def _as_dict(batch) -> dict:
        # File loaders give (images, labels); the crop bank gives a dict with soft targets too.
        if isinstance(batch, dict):
            return batch
        images, labels = batch
        return {"images": images, "labels": labels}

    def training_step(self, batch, batch_idx):
        batch = self._as_dict(batch)
        targets = batch["labels"]
        logits = self(batch["images"])
        loss = self._loss(logits, batch)
        self.train_acc(logits, targets)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        batch = self._as_dict(batch)
        targets = batch["labels"]
        logits = self(batch["images"]).float()
        # Unweighted, unsmoothed loss: the plateau scheduler should see the true validation NLL.
        self.log("val_loss", F.cross_entropy(logits, targets), prog_bar=True, sync_dist=True)
        self.val_acc(logits, targets)
        self.val_f1(logits, targets)
        self.log("val_acc", self.val_acc, prog_bar=True)
        self.log("val_macro_f1", self.val_f1, prog_bar=True)

    def configure_optimizers(self):
        # Only trainable parameters: head-first fine-tuning adds the backbone as a new group later.
        head = self.hparams.head_name
        ratio = self.hparams.backbone_lr_ratio
        named = [(n, p) for n, p in self.network.named_parameters() if p.requires_grad]
        if head and ratio != 1.0:
            # A head learns a new task fast; features learnt on tens of thousands of faces
            # should move slowly.
            groups = [{"params": [p for n, p in named if n.startswith(head + ".")], "lr": self.hparams.lr},
                      {"params": [p for n, p in named if not n.startswith(head + ".")], "lr": self.hparams.lr * ratio}]
            groups = [g for g in groups if g["params"]]
        else:
            groups = [{"params": [p for _, p in named], "lr": self.hparams.lr}]
        optimiser = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.schedule == "cosine":
            # A fixed budget of epochs (fine-tuning, distillation): warm up for the first 5 % of
            # the steps, then cosine to zero by the last one.
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, WarmupCosine(total, max(total // 20, 1)))
            return {"optimizer": optimiser, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, mode="min", factor=self.hparams.plateau_factor,
            patience=self.hparams.plateau_patience, min_lr=1e-7,
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
