"""Datasets on disk: folder scanning, de-duplication, splits, and the Lightning DataModule."""
