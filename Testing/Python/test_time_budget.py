"""Fine-tuning within a time budget (`--max-minutes`, 30 by default): after an epoch the
schedule is shortened so that the remaining epochs fit, the cosine decay still ends at the
new last epoch, the change is reported, and a resumed run keeps the shortened schedule.
Also the per-class Dice loss the trainer logs each epoch."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest

from MedTuningCore.data.prepared import PreparedCase
from MedTuningCore.models import build_model
from MedTuningCore.progress import LogLines
from MedTuningCore.training.trainer import Trainer, TrainingConfig, learning_rate

LABELS = ["inner", "outer"]


def cases() -> list[PreparedCase]:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(1, 6, 32, 32)).astype(np.float32)
    label = np.zeros((6, 32, 32), np.uint8)
    label[:, 8:24, 8:24] = 2
    label[:, 12:20, 12:20] = 1
    volume[0][label > 0] += 2.0
    return [PreparedCase("a", volume, label, (1.0, 1.0, 1.0))]


def trainer(tmp_path, max_minutes, epochs=6) -> tuple[Trainer, list]:
    events = []
    model = build_model(backbone="vit_tiny_patch16_224", decoder="unet", in_channels=1, num_classes=3,
                        img_size=32, reference_depth=8)
    config = TrainingConfig(epochs=epochs, iterations_per_epoch=2, batch_size=1, patch=(4, 32, 32),
                            warmup_epochs=0, device="cpu", max_minutes=max_minutes)
    return Trainer(model, cases(), [], config, tmp_path / "run", LABELS, events.append), events


def test_the_schedule_shrinks_to_the_budget_and_says_so(tmp_path):
    run, events = trainer(tmp_path, max_minutes=1e-9)  # any epoch overruns it
    result = run.fit()
    assert result.epochs_run == 1 and run.config.epochs == 1
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "training 1 epochs instead of 6 (2 steps" in warnings[0]
    # the epoch's event counts the new plan: the run is complete, and a log says no time is left
    epoch_events = [e for e in events if e["event"] == "epoch"]
    assert [(e["epochs"], e["fraction"]) for e in epoch_events] == [(1, 1.0)]
    out = io.StringIO()
    log = LogLines(out)
    for event in events:
        log(event)
    assert "epoch 0 (1 of 1) done" in out.getvalue() and "left" not in out.getvalue().splitlines()[-1]
    # so few steps learn little: the warning says so and what to do
    assert "Fewer than 200 steps" in warnings[0] and "--max-minutes" in warnings[0]
    # the decay is recomputed for the new length: under it, step 1 runs at half the rate,
    # where the six-epoch schedule is still at 98 %
    assert learning_rate(run.config, 1, 2) == pytest.approx(0.5 * run.config.lr)
    assert learning_rate(replace(run.config, epochs=6), 1, 2) > 0.95 * run.config.lr


def test_a_short_budget_caps_the_warm_up_and_is_reported_once(tmp_path):
    run, events = trainer(tmp_path, max_minutes=1e-9, epochs=12)
    run.config.warmup_epochs = 2
    run.epoch, run.seconds_trained = 1, 1.0  # as after a first epoch of 1 s, far over the budget
    run.fit_to_time_budget()
    assert run.config.epochs == 1 and run.config.warmup_epochs == 0  # no run left in warm-up
    run.config.epochs, run.epoch = 3, 2  # a later shortening is not reported again
    run.fit_to_time_budget()
    assert run.config.epochs == 2
    assert len([e for e in events if e["event"] == "warning"]) == 1


def test_a_budget_that_leaves_enough_steps_only_reports_the_new_length(tmp_path):
    run, events = trainer(tmp_path, max_minutes=10, epochs=500)
    run.epoch, run.seconds_trained = 1, 2.0  # 2 s per epoch of 2 steps: 300 epochs fit
    run.fit_to_time_budget()
    (warning,) = [e["message"] for e in events if e["event"] == "warning"]
    assert "training 300 epochs instead of 500 (600 steps" in warning and "Fewer than" not in warning


def test_no_budget_runs_every_epoch(tmp_path):
    run, events = trainer(tmp_path, max_minutes=None, epochs=2)
    assert run.fit().epochs_run == 2
    assert not [e for e in events if e["event"] == "warning"]


def test_a_resumed_run_keeps_the_shortened_schedule(tmp_path):
    run, _ = trainer(tmp_path, max_minutes=1e-9)
    run.fit()
    again, _ = trainer(tmp_path, max_minutes=1e-9)
    assert again.config.epochs == 6
    again.resume()
    assert again.config.epochs == 1 and again.epoch == 1 and again.budget_reported
    assert again.seconds_trained == pytest.approx(run.seconds_trained)
    assert again.fit().epochs_run == 1  # nothing left to train


def test_history_logs_each_class_dice_loss(tmp_path):
    run, _ = trainer(tmp_path, max_minutes=None, epochs=1)
    record = run.fit().history[0]
    assert set(record["class_dice_loss"]) == set(LABELS)
    assert all(0.0 <= v <= 1.0 for v in record["class_dice_loss"].values())
