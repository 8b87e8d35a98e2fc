"""Helpers of the MedTuningSegment module that do not need the Slicer GUI."""
