"""Scoring a model: metrics, calibration, plots and the model card."""
