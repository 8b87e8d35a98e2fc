"""Progress reporting: a bar on a terminal, JSON lines for programs (the Slicer module)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

ProgressEvent = dict[str, Any]
"""One event, as JSON for programs: {"event": "progress", "stage": ..., "fraction": 0..1 of the
whole job, ...}, {"event": "epoch", "epoch": ..., "loss": ..., "val_dice": {...}}, {"event":
"warning" | "error", "message": ...} or the command's final {"event": "done", ...}."""
ProgressCallback = Callable[[ProgressEvent], None]


def notify(progress: ProgressCallback | None, event: ProgressEvent) -> None:
    """Send `event` to `progress` when there is one (the library's calls all take None)."""
    if progress is not None:
        progress(event)


class ProgressPrinter:
    """Callable receiving progress events ({"event": "progress", "fraction": ...})."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None, case: str | None = None) -> None:
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.mode = "bar" if mode == "auto" and self.stream.isatty() else mode
        self.case = case

    def __call__(self, event: ProgressEvent) -> None:
        if self.case is not None:
            event = {**event, "case": self.case}
        if self.mode == "json":
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()
        elif event.get("event") == "warning" or event.get("event") == "error":
            self.stream.write(f"\n{event['event']}: {event.get('message', '')}\n")
        elif self.mode == "bar" and event.get("event") == "progress":
            fraction = float(event.get("fraction", 0.0))
            filled = int(30 * fraction)
            label = f"{self.case} " if self.case else ""
            self.stream.write(f"\r{label}[{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}% "
                              f"{event.get('stage', '')}   ")
            if event.get("stage") == "done":
                self.stream.write("\n")
            self.stream.flush()
