"""The `medtuning` command line: the only place that parses arguments."""

from .app import main

__all__ = ["main"]
