"""Progress reporting: a bar on a terminal, plain lines for a log, JSON lines for programs.

`medtuning finetune > run.log` or `... | tee run.log` gets plain lines, as nnU-Net prints them:
one when a stage starts, one per epoch (loss, validation Dice, time elapsed and left), one when
a case is done, and at most one every 30 s in between; the bar is drawn only on a terminal.
The Slicer module asks for JSON lines (--progress json).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

LOG_INTERVAL_SECONDS = 30.0  # the most often a log gets a line within a stage

ProgressEvent = dict[str, Any]
"""One event, as JSON for programs: {"event": "progress", "stage": ..., "fraction": 0..1 of the
whole job, ...}, {"event": "epoch", "epoch": ..., "loss": ..., "val_dice": {...}, "fraction": epochs done
of the schedule as it stands (a time budget may have shortened it)}, {"event":
"warning" | "error", "message": ...} or the command's final {"event": "done", ...}."""
ProgressCallback = Callable[[ProgressEvent], None]


def notify(progress: ProgressCallback | None, event: ProgressEvent) -> None:
    """Send `event` to `progress` when there is one (the library's calls all take None)."""
    if progress is not None:
        progress(event)


def duration(seconds: float) -> str:
    """'m:ss', or 'h:mm:ss' from an hour on."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LogLines:
    """Plain progress lines for a log file or a pipe (see the module's docstring)."""

    def __init__(self, stream: TextIO, case: str | None = None, interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.prefix, self.interval, self.clock = stream, f"{case}: " if case else "", interval, clock
        self.start = self.last_line = clock()
        self.stage: str | None = None
        self.stage_start: tuple[float, float] = (self.start, 0.0)  # (time, fraction) of the stage's first event
        self.fraction = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        kind, now = event.get("event"), self.clock()
        if kind == "progress":
            line = self.progress_line(event, now)
        elif kind == "epoch":
            line = self.epoch_line(event, now)
        else:
            return
        if line:
            self.stream.write(f"{self.prefix}{line}\n")
            self.stream.flush()
            self.last_line = now

    def progress_line(self, event: ProgressEvent, now: float) -> str | None:
        stage, self.fraction = event.get("stage", ""), float(event.get("fraction", self.fraction))
        if stage == "done":
            return f"done in {duration(now - self.start)}"
        if stage != self.stage:
            self.stage, self.stage_start = stage, (now, self.fraction)
        elif now - self.last_line < self.interval:
            return None
        return ", ".join(filter(None, [stage, steps_text(event), f"{100 * self.fraction:.0f}%", self.times(now)]))

    def epoch_line(self, event: ProgressEvent, now: float) -> str:
        # an epoch's own fraction counts the schedule as it is now (a time budget may have cut it)
        self.fraction = float(event.get("fraction", self.fraction))
        parts = [f"epoch {epoch_text(event)} done", f"loss {event['loss']:.4f}", dice_text(event), self.times(now)]
        return ", ".join(filter(None, parts))

    def times(self, now: float) -> str:
        """Time elapsed, and left at the rate of the current stage so far (none before it moved)."""
        text = f"{duration(now - self.start)} elapsed"
        since, done_then = self.stage_start
        if done_then < self.fraction < 1.0 and now > since:
            left = (now - since) * (1.0 - self.fraction) / (self.fraction - done_then)
            text += f", about {duration(left)} left"
        return text


def epoch_text(event: ProgressEvent) -> str:
    """'2 (3 of 10)': epochs are numbered from 0, as in history.json and "best epoch"."""
    total = f" ({event['epoch'] + 1} of {event['epochs']})" if "epochs" in event else ""
    return f"{event['epoch']}{total}"


def steps_text(event: ProgressEvent) -> str:
    if "step" not in event:
        return ""
    return f"epoch {epoch_text(event)}, step {event['step']}/{event['steps']}, loss {event['loss']:.4f}"


def dice_text(event: ProgressEvent) -> str:
    if "val_dice" not in event:
        return ""
    scores = ", ".join(f"{name} {value:.3f}" for name, value in event["val_dice"].items())
    mean = event.get("val_mean_dice")
    return f"validation Dice {mean:.3f} ({scores})" if mean is not None else f"validation Dice {scores}"


class Bar:
    """A bar redrawn in place on a terminal."""

    def __init__(self, stream: TextIO, case: str | None = None) -> None:
        self.stream, self.label = stream, f"{case} " if case else ""

    def __call__(self, event: ProgressEvent) -> None:
        if event.get("event") != "progress":
            return
        fraction = float(event.get("fraction", 0.0))
        filled = int(30 * fraction)
        self.stream.write(f"\r{self.label}[{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}% "
                          f"{event.get('stage', '')}   ")
        if event.get("stage") == "done":
            self.stream.write("\n")
        self.stream.flush()


def is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class ProgressPrinter:
    """Receives progress events and shows them.

    "json": every event as a JSON line on `stream` (default stdout), for programs.
    "auto": a bar on stderr when it is a terminal, and plain lines (`LogLines`) on stdout when
    stdout is not a terminal (a file or a pipe), else on stderr when that is not one; with an
    explicit `stream`, the bar when it is a terminal, else the lines. "bar" and "log" force one.
    Warnings and errors are always a line on `stream` (default stderr).
    """

    def __init__(self, mode: str = "auto", stream: TextIO | None = None, case: str | None = None,
                 interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.mode, self.case = mode, case
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.bar: Bar | None = None
        self.log: LogLines | None = None
        if mode in ("bar", "auto"):
            bar_stream = stream or sys.stderr
            self.bar = Bar(bar_stream, case) if mode == "bar" or is_terminal(bar_stream) else None
        if mode in ("log", "auto"):
            log_stream = stream or (sys.stdout if mode == "log" else
                                    next((s for s in (sys.stdout, sys.stderr) if not is_terminal(s)), None))
            if log_stream is not None and (mode == "log" or not is_terminal(log_stream)):
                self.log = LogLines(log_stream, case, interval)

    def __call__(self, event: ProgressEvent) -> None:
        if self.case is not None:
            event = {**event, "case": self.case}
        if self.mode == "json":
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()
            return
        if event.get("event") in ("warning", "error"):
            # after a bar, first end its line
            self.stream.write(f"{chr(10) if self.bar else ''}{event['event']}: {event.get('message', '')}\n")
            self.stream.flush()
        for view in (self.bar, self.log):
            if view is not None:
                view(event)
