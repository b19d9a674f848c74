"""Evaluation measures: FID/KID (torchmetrics), SWD, memorization, detector rate."""
