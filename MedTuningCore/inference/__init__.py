"""Segmentation: sliding-window prediction, the Segmenter, post-processing, merging sets."""
