"""Progress a log can read: plain lines when the output is not a terminal (progress.py)."""

from __future__ import annotations

import io
import sys

from MedTuningCore.progress import LogLines, ProgressPrinter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def training_events(epochs: int, steps: int):
    """The trainer's events: one per step, then one per epoch (with a validation Dice)."""
    for epoch in range(epochs):
        for it in range(steps):
            step = epoch * steps + it + 1
            yield {"event": "progress", "stage": "training", "epoch": epoch, "epochs": epochs, "step": step,
                   "steps": epochs * steps, "fraction": step / (epochs * steps), "loss": 1.0}
        yield {"event": "epoch", "epoch": epoch, "epochs": epochs, "loss": 0.5, "lr": 1e-3,
               "val_dice": {"edema": 0.25, "necrosis": 0.0}, "val_mean_dice": 0.125}


def test_one_line_per_epoch_and_at_most_one_every_30_s_during_an_epoch():
    clock, out = Clock(), io.StringIO()
    log = LogLines(out, clock=clock)
    printed_at = []
    for event in training_events(epochs=2, steps=100):
        clock.now += 1.0  # a step takes a second: 100 s per epoch
        before = out.getvalue().count("\n")
        log(event)
        if out.getvalue().count("\n") > before:
            printed_at.append((clock.now, event["event"]))
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "done" in line] == [
        "epoch 0 (1 of 2) done, loss 0.5000, validation Dice 0.125 (edema 0.250, necrosis 0.000), 1:41 elapsed, "
        "about 1:41 left",  # at the rate since step 1: 99 steps in 100 s
        "epoch 1 (2 of 2) done, loss 0.5000, validation Dice 0.125 (edema 0.250, necrosis 0.000), 3:22 elapsed"]
    assert lines[0] == "training, epoch 0 (1 of 2), step 1/200, loss 1.0000, 0%, 0:01 elapsed"
    steps = [t for t, kind in printed_at if kind == "progress"]
    assert all(later - earlier >= 30 for earlier, later in zip(steps, steps[1:]))
    assert 6 <= len(steps) <= 8  # a long epoch still says something about every 30 s
    assert "about" in lines[1] and "left" in lines[1]


class Stream(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def printer_with(monkeypatch, stdout_terminal: bool, stderr_terminal: bool) -> tuple[ProgressPrinter, Stream, Stream]:
    out, err = Stream(stdout_terminal), Stream(stderr_terminal)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    printer = ProgressPrinter("auto", case="pat0003")
    for event in ({"event": "progress", "stage": "inference", "fraction": 0.5},
                  {"event": "progress", "stage": "done", "fraction": 1.0}):
        printer(event)
    return printer, out, err


def test_on_terminals_a_bar_only(monkeypatch):
    _, out, err = printer_with(monkeypatch, stdout_terminal=True, stderr_terminal=True)
    assert out.getvalue() == "" and "\r" in err.getvalue() and "[####" in err.getvalue()


def test_stdout_to_a_file_gets_lines_while_the_terminal_keeps_its_bar(monkeypatch):
    _, out, err = printer_with(monkeypatch, stdout_terminal=False, stderr_terminal=True)
    assert out.getvalue().splitlines() == ["pat0003: inference, 50%, 0:00 elapsed", "pat0003: done in 0:00"]
    assert "\r" in err.getvalue()


def test_only_stderr_redirected_gets_the_lines(monkeypatch):
    _, out, err = printer_with(monkeypatch, stdout_terminal=True, stderr_terminal=False)
    assert out.getvalue() == "" and err.getvalue().splitlines()[-1] == "pat0003: done in 0:00"
    assert "\r" not in err.getvalue()


def test_warnings_are_a_line_of_their_own(monkeypatch):
    printer, out, err = printer_with(monkeypatch, stdout_terminal=False, stderr_terminal=False)
    printer({"event": "warning", "message": "out of GPU memory: batch of 4 windows"})
    assert err.getvalue() == "warning: out of GPU memory: batch of 4 windows\n"
    assert len(out.getvalue().splitlines()) == 2
