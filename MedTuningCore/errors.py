"""User-facing errors: one family. Each names the file or setting at fault and what to do.

Everything a user can cause (a file, an option, a set, a dataset, a full disk) raises a
MedTuningError or a subclass; the command line prints its message as one line and exits
with 2, and the Python API lets it propagate. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedTuningError(Exception):
    """Base of errors a user can fix; the command line prints them and exits with 2."""


class InputError(MedTuningError):
    """An input image, option or output path is unusable."""


class UsageError(InputError):
    """Options that do not fit together or a value out of range."""


class ModelConfigError(MedTuningError, ValueError):
    """A model configuration that cannot be built (unknown backbone, decoder, tuning method,
    or sizes that do not fit). Also a ValueError, as callers of build_model expect."""


class UnwritableError(InputError, OSError):
    """A file could not be written (full disk, quota, no permission). Also an OSError, so code
    with a fallback for an unwritable place (a read-only library) still finds it."""


class DivergedError(MedTuningError):
    """Training produced non-finite losses or gradients step after step (a learning rate too
    high for the data, or corrupt intensities); the last checkpoint is left as it was."""
