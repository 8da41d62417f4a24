"""Training: the LightningModule, callbacks, and the `train` run that ties them together."""
