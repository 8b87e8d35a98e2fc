"""Head-first epochs (`--head-first-epochs`, LP-FT: Kumar et al. 2022): for the first epochs
only the parts outside the inserted modules train, then the inserted modules join."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedTuningCore.data.prepared import PreparedCase
from MedTuningCore.data.sampling import SamplingOptions
from MedTuningCore.errors import InputError
from MedTuningCore.models import build_model
from MedTuningCore.models.inserted import inserted_parameter_ids
from MedTuningCore.training.finetune import FinetuneConfig, config_to_argv
from MedTuningCore.training.trainer import Trainer, TrainingConfig


def case() -> PreparedCase:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(1, 6, 32, 32)).astype(np.float32)
    label = np.zeros((6, 32, 32), np.uint8)
    label[:, 8:24, 8:24] = 1
    volume[0][label > 0] += 2.0
    return PreparedCase("a", volume, label, (1.0, 1.0, 1.0))


def trainer(tmp_path, tuning: str, head_first_epochs: int, epochs: int = 4, max_minutes=None,
            events: list | None = None) -> Trainer:
    torch.manual_seed(0)
    model = build_model(backbone="vit_tiny_patch16_224", decoder="unet", tuning=tuning, in_channels=1,
                        num_classes=2, img_size=32, reference_depth=8)
    config = TrainingConfig(epochs=epochs, iterations_per_epoch=2, batch_size=1, patch=(4, 32, 32), warmup_epochs=0,
                            device="cpu", amp="none", head_first_epochs=head_first_epochs, max_minutes=max_minutes)
    return Trainer(model, [case()], [], config, tmp_path / "run", ["inside"],
                   events.append if events is not None else None)


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def changed(before, params) -> bool:
    return any(not torch.equal(a, p.detach()) for a, p in zip(before, params))


@pytest.mark.parametrize("tuning", ["med_adapter", "med_adapter_paper"])
def test_the_inserted_modules_wait_for_the_head_first_epochs(tmp_path, tuning):
    run = trainer(tmp_path, tuning, head_first_epochs=1)
    inserted = inserted_parameter_ids(run.model)
    others = [p for p in run.params if id(p) not in inserted]
    assert run.inserted_params and others
    adapters, rest = snapshot(run.inserted_params), snapshot(others)
    sampling = SamplingOptions(patch=run.patch, foreground_fraction=0.5, augmentation="paper")
    rng = np.random.default_rng(0)
    for step in (0, 1):  # epoch 0 of 2-step epochs: the head-first epoch
        run.train_step(rng, sampling, step, 2)
    assert changed(rest, others), "the decoder must train in the head-first epoch"
    assert not changed(adapters, run.inserted_params), "the adapters must wait"
    assert not any(id(p) in {id(q) for q in run.optimizer.state} for p in run.inserted_params)
    run.train_step(rng, sampling, 2, 2)  # epoch 1: they join
    assert changed(adapters, run.inserted_params)


def test_without_head_first_epochs_the_adapters_train_from_the_first_step(tmp_path):
    run = trainer(tmp_path, "med_adapter_paper", head_first_epochs=0)
    adapters = snapshot(run.inserted_params)
    run.train_step(np.random.default_rng(0), SamplingOptions(patch=run.patch, foreground_fraction=0.5,
                                                            augmentation="paper"), 0, 2)
    assert changed(adapters, run.inserted_params)


def test_a_method_without_inserted_modules_is_refused(tmp_path):
    with pytest.raises(InputError, match="inserts modules"):
        trainer(tmp_path, "head", head_first_epochs=1)


def test_a_budget_that_leaves_the_adapters_nothing_says_so_and_records_what_ran(tmp_path):
    events: list = []
    run = trainer(tmp_path, "med_adapter_paper", head_first_epochs=3, epochs=8, max_minutes=1e-9, events=events)
    run.fit()  # the budget cuts the schedule to the one epoch already run, a head-first one
    assert run.config.epochs == 1 and run.config.head_first_epochs == 1
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("no epoch is left for the inserted modules" in w for w in warnings)


def test_a_shortened_schedule_keeps_half_of_it_for_the_adapters(tmp_path):
    run = trainer(tmp_path, "med_adapter_paper", head_first_epochs=6, epochs=8)
    run.epoch, run.seconds_trained = 1, 60.0  # one epoch ran, a minute each: 4 more fit in 5 minutes
    run.config.max_minutes = 5.0
    run.fit_to_time_budget()
    assert run.config.epochs == 5 and run.config.head_first_epochs == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"head_first_epochs": 5, "epochs": 5}, "give 0 to 4"),
    ({"head_first_epochs": -1}, "give 0 to"),
    ({"head_first_epochs": 1, "tuning": "head"}, "--tuning head inserts none"),
])
def test_finetune_refuses_head_first_epochs_it_cannot_honour(tmp_path, options, message):
    from MedTuningCore.training.finetune import finetune

    config = FinetuneConfig(data=str(tmp_path / "none.csv"), output=str(tmp_path / "set.safetensors"),
                            backbone="vit_tiny_patch16_224", **options)
    with pytest.raises(InputError, match=message):
        finetune(config)
    assert not (tmp_path / "set.run").exists()


def test_the_option_reaches_the_command_line_and_back():
    from MedTuningCore.cli.finetune import finetune_arguments

    args = finetune_arguments(["--data", "d", "--backbone", "b", "--head-first-epochs", "2"])
    config = FinetuneConfig.from_dict(vars(args))
    assert config.head_first_epochs == 2
    argv = config_to_argv(config)
    assert argv[argv.index("--head-first-epochs") + 1] == "2"
