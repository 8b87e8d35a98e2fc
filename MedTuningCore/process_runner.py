"""Running `medtuning` in a background process: progress events, logs, cancel, clean-up.

Used by the Slicer module (Slicer must stay responsive: it polls `poll()` from a timer) and
usable from any script. The child runs in its own process group (session), so Cancel kills
the whole tree, including any workers the child started. Temporary files live in a private
directory that is removed when the run ends, is cancelled, or fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EventCallback = Callable[[dict[str, Any]], None]
LogCallback = Callable[[str], None]


@dataclass
class RunState:
    running: bool
    returncode: int | None = None
    cancelled: bool = False
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def medtuning_command(python: str | None = None) -> list[str]:
    """The command line of the core under a given Python (Slicer's PythonSlicer, or this one)."""
    return [python or sys.executable, "-m", "MedTuningCore"]


class BackgroundProcess:
    def __init__(self, args: Sequence[str], on_event: EventCallback | None = None, on_log: LogCallback | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.args = list(args)
        self.on_event = on_event or (lambda e: None)
        self.on_log = on_log or (lambda line: None)
        self.env = env
        self.cwd = cwd
        self.temp_dir = Path(tempfile.mkdtemp(prefix="medtuning-"))
        self.state = RunState(running=False)
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._stderr_tail: list[str] = []

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        self._process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            bufsize=1, env=self.env, cwd=self.cwd, **kwargs)
        self.state.running = True
        for stream, name in ((self._process.stdout, "out"), (self._process.stderr, "err")):
            threading.Thread(target=self._pump, args=(stream, name), daemon=True).start()

    def _pump(self, stream, name: str) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\n")))
        self._lines.put((name, None))

    def poll(self) -> RunState:
        """Deliver what the child printed since the last call; never blocks."""
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            if name == "out" and line.startswith("{"):
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    self.on_log(line)
                    continue
                self.state.events.append(event)
                self.on_event(event)
            else:
                if name == "err":
                    self._stderr_tail = (self._stderr_tail + [line])[-20:]
                self.on_log(line)
        if self._process is not None and self.state.running and self._process.poll() is not None:
            self._finish()
        return self.state

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> RunState:
        """Poll until the child ends (for scripts and tests; Slicer uses a timer instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll().running:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.args[:4]}... still running after {timeout} s")
            time.sleep(interval)
        return self.state

    def _finish(self) -> None:
        assert self._process is not None
        self._process.wait()
        time.sleep(0.05)  # let the reader threads hand over the last lines
        self.state.running = False
        self.state.returncode = self._process.returncode
        self.poll()
        if self.state.returncode != 0 and not self.state.cancelled:
            message = next((line for line in reversed(self._stderr_tail) if "error" in line.lower()), None)
            self.state.error = message or (self._stderr_tail[-1] if self._stderr_tail else
                                           f"exited with code {self.state.returncode}")
        self.cleanup()

    def cancel(self, grace_seconds: float = 5.0) -> None:
        """Stop the child and everything it started: SIGTERM to the group, SIGKILL after a grace period."""
        if self._process is None or self._process.poll() is not None:
            return
        self.state.cancelled = True
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self._process.pid)], capture_output=True)
        else:
            pgid = os.getpgid(self._process.pid)
            os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=grace_seconds)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)  # whatever is left of the tree
        self._process.wait()
        self.poll()

    def cleanup(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)
