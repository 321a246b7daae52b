"""Engines: Ignite/MONAI handlers for tracking, metrics, checkpoints and reports."""
