"""Which precision `--amp auto` picks, on each platform (the others simulated)."""

from __future__ import annotations

import subprocess

import pytest
import torch

from MedTuningCore.inference import precision
from MedTuningCore.inference.precision import (
    BF16_MIN_SPEEDUP,
    autocast_dtype,
    bf16_matmul_speedup,
    cpu_bf16_override,
    cpu_has_native_bf16,
    cpuinfo_has_bf16,
)


@pytest.fixture(autouse=True)
def fresh_check(monkeypatch):
    monkeypatch.delenv("MEDTUNING_CPU_BF16", raising=False)
    cpu_has_native_bf16.cache_clear()
    yield
    cpu_has_native_bf16.cache_clear()


X86_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
X86_NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_the_probe_times_both_precisions_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    speedup = bf16_matmul_speedup.__wrapped__(rows=64, inner=32, cols=64, repeats=2)
    assert 0 < speedup < float("inf")
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("speedup,expected", [(0.59, None), (1.14, None), (BF16_MIN_SPEEDUP - 0.01, None),
                                              (BF16_MIN_SPEEDUP, torch.bfloat16), (2.0, torch.bfloat16)])
def test_auto_on_a_cpu_with_the_flag_picks_bf16_only_where_the_probe_finds_it_faster(monkeypatch, speedup,
                                                                                    expected):
    """The flag alone misled: an Intel Xeon VM with AVX512-BF16 ran bf16 products at 0.6-1.14x
    float32 (a training step 1.44x slower); bf16 must clear the threshold."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: speedup)
    assert autocast_dtype("auto", torch.device("cpu")) is expected


def test_no_probe_without_the_flag_or_when_the_override_decides(monkeypatch):
    def probe():
        raise AssertionError("the probe ran")

    monkeypatch.setattr(precision, "bf16_matmul_speedup", probe)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("auto", torch.device("cpu")) is None
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "1")
    assert autocast_dtype("auto", torch.device("cpu")) is torch.bfloat16


def test_the_override_wins_over_an_answer_already_cached(monkeypatch):
    monkeypatch.setattr(precision.Path, "read_text", lambda self, errors=None: X86_BF16)
    monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: 2.0)
    assert cpu_has_native_bf16("linux") is True  # cached
    assert autocast_dtype("auto", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "0")
    assert autocast_dtype("auto", torch.device("cpu")) is None


@pytest.mark.parametrize("text,expected", [(X86_BF16, True), (X86_NO_BF16, False), (ARM_BF16, True),
                                           ("flags : amx_bf16 amx_tile\n", True), ("", False)])
def test_cpuinfo_flags_decide_native_bf16(text, expected):
    assert cpuinfo_has_bf16(text) is expected


def test_linux_reads_proc_cpuinfo(monkeypatch):
    monkeypatch.setattr(precision.Path, "read_text", lambda self, errors=None: X86_NO_BF16)
    assert cpu_has_native_bf16("linux") is False
    cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(precision.Path, "read_text", lambda self, errors=None: X86_BF16)
    assert cpu_has_native_bf16("linux") is True


@pytest.mark.parametrize("answer,expected", [("1\n", True), ("0\n", False), ("", False)])
def test_macos_asks_sysctl_for_feat_bf16(monkeypatch, answer, expected):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout=answer, stderr="")

    monkeypatch.setattr(precision.subprocess, "run", fake_run)
    assert cpu_has_native_bf16("darwin") is expected
    assert calls == [["sysctl", "-n", "hw.optional.arm.FEAT_BF16"]]


def test_macos_without_sysctl_answers_false(monkeypatch):
    def missing(cmd, **kwargs):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(precision.subprocess, "run", missing)
    assert cpu_has_native_bf16("darwin") is False


def test_windows_keeps_float32_unless_asked(monkeypatch):
    monkeypatch.setattr(precision.sys, "platform", "win32")
    monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: 2.0)
    assert cpu_has_native_bf16() is False
    assert autocast_dtype("auto", torch.device("cpu")) is None
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "1")
    assert cpu_has_native_bf16() is False  # the hardware answer stays what the hardware says
    assert autocast_dtype("auto", torch.device("cpu")) is torch.bfloat16


@pytest.mark.parametrize("value,expected", [("1", True), ("0", False), (" 1 ", True), ("", None)])
def test_the_override_is_read_on_every_call(monkeypatch, value, expected):
    assert cpu_bf16_override() is None
    monkeypatch.setenv("MEDTUNING_CPU_BF16", value)
    assert cpu_bf16_override() is expected


def test_an_unknown_override_value_is_ignored_with_a_warning_naming_the_values(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "yes")
    with pytest.warns(UserWarning, match=r"MEDTUNING_CPU_BF16='yes' is ignored: set it to 1 .* or 0"):
        assert autocast_dtype("auto", torch.device("cpu")) is None


def test_auto_on_the_cpu_follows_the_check_and_explicit_choices_win(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "1")
    assert autocast_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "0")
    assert autocast_dtype("auto", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("none", cpu) is None and autocast_dtype(None, cpu) is None
    with pytest.raises(ValueError, match="amp must be one of"):
        autocast_dtype("int8", cpu)


def test_training_precision_auto_is_bf16_on_cuda_and_follows_the_cpu_check(monkeypatch):
    from MedTuningCore.errors import InputError
    from MedTuningCore.training.trainer import training_autocast

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert training_autocast("auto", cuda) is torch.bfloat16
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "1")
    assert training_autocast("auto", cpu) is torch.bfloat16
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "0")
    assert training_autocast("auto", cpu) is None
    # runs from before the option resume as they trained: bf16 on CUDA only
    assert training_autocast("cuda", cuda) is torch.bfloat16 and training_autocast("cuda", cpu) is None
    assert training_autocast("none", cuda) is None and training_autocast("bf16", cpu) is torch.bfloat16
    with pytest.raises(InputError, match="amp must be one of"):
        training_autocast("fp8", cpu)


def test_a_resumed_run_from_before_the_option_keeps_float32_on_the_cpu():
    from MedTuningCore.training.finetune import LEGACY_DEFAULTS

    assert LEGACY_DEFAULTS["amp"] == "cuda"


def tiny_trainer(run_dir):
    import numpy as np

    from MedTuningCore.data.prepared import PreparedCase
    from MedTuningCore.models import build_model
    from MedTuningCore.training.trainer import Trainer, TrainingConfig

    model = build_model(backbone="vit_tiny_patch16_224", decoder="unet", in_channels=1, num_classes=2,
                        img_size=32, reference_depth=8)
    case = PreparedCase("a", np.zeros((1, 4, 32, 32), np.float32), np.zeros((4, 32, 32), np.uint8), (1.0, 1.0, 1.0))
    config = TrainingConfig(epochs=1, iterations_per_epoch=1, batch_size=1, patch=(4, 32, 32), device="cpu")
    return Trainer(model, [case], [], config, run_dir, ["x"])


def test_a_resumed_cpu_run_keeps_the_precision_its_probe_chose(tmp_path, monkeypatch):
    """The probe may answer otherwise on another day (a loaded machine): a resumed run keeps
    the precision it started in, so that it continues the same computation."""
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "1")
    first = tiny_trainer(tmp_path / "run")
    assert first.amp is torch.bfloat16
    first.run_dir.mkdir()  # as fit() makes it
    first.save()
    monkeypatch.setenv("MEDTUNING_CPU_BF16", "0")
    resumed = tiny_trainer(tmp_path / "run")
    assert resumed.amp is None  # a new run would now train in float32 ...
    resumed.resume()
    assert resumed.amp is torch.bfloat16  # ... the resumed one keeps bf16
    resumed.config.amp = "none"  # an explicit choice is not overridden
    resumed.amp = None
    resumed.resume()
    assert resumed.amp is None


def test_every_rank_trains_in_rank_0s_precision(monkeypatch):
    from MedTuningCore.training import trainer

    def broadcast(tensor, src):  # what rank 0 sent: bf16
        assert src == 0
        tensor.fill_(1)

    monkeypatch.setattr(trainer.dist, "broadcast", broadcast)
    assert trainer.Trainer.rank0_precision(None) is torch.bfloat16
    monkeypatch.setattr(trainer.dist, "broadcast", lambda tensor, src: tensor.fill_(0))
    assert trainer.Trainer.rank0_precision(torch.bfloat16) is None
