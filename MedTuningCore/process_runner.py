"""Running `medtuning` in a background process: progress events, logs, cancel, clean-up.

Used by the Slicer module (Slicer must stay responsive: it polls `poll()` from a timer) and
usable from any script. The child runs in its own process group (session), so Cancel kills
the whole tree, including any workers the child started; on Windows it also runs without a
console window, which would otherwise pop up and kill the job when closed. Temporary files
live in a private directory that is removed when the run ends, is cancelled, or fails.

A child that stops early on request and says so (`medtuning finetune` exits 130 and reports
`"cancelled": true` in its `done` event, after writing the best set) counts as cancelled, not
failed: its result is there to keep.
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

from .progress import ProgressCallback as EventCallback  # the child's progress events

LogCallback = Callable[[str], None]

# The exit code of a child that stopped early on request (finetune_command.EXIT_CANCELLED; 128 +
# SIGINT, the shell's convention). Not imported from there: that module needs torch.
CANCELLED_EXIT_CODE = 130
# How long after the child's exit its output may still be arriving (a grandchild that inherited
# the pipes keeps them open); after that the run ends without waiting for the rest.
OUTPUT_GRACE_SECONDS = 10.0

# Win32 constants, so that the Windows options can be built (and tested) on any platform, where
# subprocess lacks them: process creation flags (winbase.h), STARTUPINFO.dwFlags (processthreadsapi.h)
# and ShowWindow's nCmdShow (winuser.h).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW = 0x00000001
SW_HIDE = 0


@dataclass
class RunState:
    running: bool
    returncode: int | None = None
    cancelled: bool = False
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> dict[str, Any] | None:
        """The child's last `done` event (its summary), if it printed one."""
        return next((e for e in reversed(self.events) if e.get("event") == "done"), None)


class _StartupInfo:
    """Stands in for subprocess.STARTUPINFO where it does not exist (building Windows options elsewhere)."""

    def __init__(self) -> None:
        self.dwFlags = 0
        self.wShowWindow = 0


def popen_platform_options(platform: str | None = None) -> dict[str, Any]:
    """Popen keyword arguments that put the child in a process group of its own (so Cancel reaches
    its whole tree) and, on Windows, hide its console window the way Slicer's own
    slicer.util.launchConsoleProcess does: without that, each job opens a console, and closing it
    kills the job. `platform` defaults to sys.platform."""
    if (platform or sys.platform) != "win32":
        return {"start_new_session": True}
    info = getattr(subprocess, "STARTUPINFO", _StartupInfo)()
    info.dwFlags |= getattr(subprocess, "STARTF_USESHOWWINDOW", STARTF_USESHOWWINDOW)
    info.wShowWindow = getattr(subprocess, "SW_HIDE", SW_HIDE)
    flags = (getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", CREATE_NEW_PROCESS_GROUP)
             | getattr(subprocess, "CREATE_NO_WINDOW", CREATE_NO_WINDOW))
    return {"creationflags": flags, "startupinfo": info}


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
        self._open_streams = 0  # the child's pipes not yet read to their end
        self._exited_at: float | None = None
        self._stderr_tail: list[str] = []

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            bufsize=1, env=self.env, cwd=self.cwd, **popen_platform_options())
        self.state.running = True
        self._open_streams = 2
        for stream, name in ((self._process.stdout, "out"), (self._process.stderr, "err")):
            threading.Thread(target=self._pump, args=(stream, name), daemon=True).start()

    def _pump(self, stream, name: str) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\n")))
        self._lines.put((name, None))  # the end of this stream

    def poll(self) -> RunState:
        """Deliver what the child printed since the last call; never blocks."""
        self._deliver()
        if self.state.running and self._output_complete():
            self._finish()
        return self.state

    def _deliver(self) -> None:
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._open_streams -= 1
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

    def _output_complete(self) -> bool:
        """The child has exited and everything it printed has been delivered: both pipes were
        read to their end (the reader threads are done), or the grace period after its exit
        has passed. Its last lines, the `done` event, often come after the exit is seen."""
        if self._process is None or self._process.poll() is None:
            return False
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        return self._open_streams == 0 or time.monotonic() - self._exited_at > OUTPUT_GRACE_SECONDS

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
        self.state.running = False
        self.state.returncode = self._process.returncode
        self.state.cancelled = self.state.cancelled or self._stopped_on_request()
        if self.state.returncode != 0 and not self.state.cancelled:
            message = next((line for line in reversed(self._stderr_tail) if "error" in line.lower()), None)
            self.state.error = message or (self._stderr_tail[-1] if self._stderr_tail else
                                           f"exited with code {self.state.returncode}")
        self.cleanup()

    def _stopped_on_request(self) -> bool:
        """The child stopped early because it was asked to (cancel file, Ctrl-C, SIGTERM, a time
        budget) and kept its result: it says so by its exit code or in its `done` event."""
        done = self.state.done
        return self.state.returncode == CANCELLED_EXIT_CODE or bool(done and done.get("cancelled"))

    def cancel(self, grace_seconds: float = 5.0) -> None:
        """Stop the child and everything it started: on Windows `taskkill /T /F` (the tree, at once);
        elsewhere SIGTERM to the group, SIGKILL after a grace period."""
        if self._process is None or self._process.poll() is not None:
            return
        self.state.cancelled = True
        if sys.platform == "win32":
            # taskkill is a console program: hidden like the job, or a console window flashes up
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self._process.pid)], capture_output=True,
                           **popen_platform_options())
        else:
            _kill_group(self._process, grace_seconds)
        self._process.wait()
        self.poll()

    def cleanup(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _kill_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """POSIX only (os.getpgid, os.killpg and SIGKILL do not exist on Windows; looked up only here)."""
    pgid = os.getpgid(process.pid)
    os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # whatever is left of the tree
