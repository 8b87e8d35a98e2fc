"""Evaluation: metrics, overlays."""
