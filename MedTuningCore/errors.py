"""User-facing errors: each names the file or setting at fault and what to do."""

from __future__ import annotations


class MedTuningError(Exception):
    """Base of errors a user can fix; the command line prints them and exits with 2."""


class InputError(MedTuningError):
    """An input image, option or output path is unusable."""
