"""MedTuningCore: parameter-efficient tuning of frozen 2D transformers for 3D segmentation
(Med-Tuning, Shen et al., MIDL 2024), usable headless and from the MedTuningSegment Slicer module."""

__version__ = "0.1.0"
