"""The Python API: importable from the package without loading torch, fine-tuning as one call
with a config dataclass, and `compare` passing finetune options through finetune's own parser."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from MedTuningCore.cli.app import main
from MedTuningCore.cli.compare import add_compare_parser
from MedTuningCore.cli.finetune import add_finetune_parser, finetune_arguments
from MedTuningCore.training.finetune import FinetuneConfig, config_to_argv


def test_importing_the_package_loads_no_torch_and_the_api_resolves():
    code = ("import sys, MedTuningCore as m; assert 'torch' not in sys.modules; "
            "from MedTuningCore import segment, finetune, FinetuneConfig, Segmenter, Library, MedTuningError; "
            "print(segment.__module__, finetune.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["MedTuningCore.inference.segment", "MedTuningCore.training.finetune"]


@pytest.mark.parametrize("argv", [["--help"], ["segment", "--help"], ["finetune", "--help"]])
def test_help_loads_no_torch(argv):
    """Start-up is kept out of commands that do not need torch (3-4 s of its import)."""
    code = ("import sys, contextlib, io; from MedTuningCore.cli.app import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try: main({argv!r})\n"
            "    except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_config_survives_the_command_line_both_ways():
    config = FinetuneConfig(data="cases.csv", output="out.safetensors", from_set="brats-glioma", labels="a,b",
                            epochs=3, iterations=7, lr=1e-3, grad_checkpointing=True, val_names="x,y",
                            augmentation="strong", spacing="1,1,2", crop_foreground=True, library="/lib")
    assert FinetuneConfig.from_dict(vars(finetune_arguments(config_to_argv(config)))) == config


def test_the_command_lines_defaults_are_the_configs():
    """The parser keeps its defaults as literals (it must not import torch for --help): each
    must be FinetuneConfig's, the default tuning method included (models.tuning.DEFAULT_TUNING)."""
    from MedTuningCore.models.tuning import DEFAULT_TUNING

    assert FinetuneConfig.from_dict(vars(finetune_arguments([]))) == FinetuneConfig()
    assert finetune_arguments([]).tuning == FinetuneConfig().tuning == DEFAULT_TUNING
    # compare's default line-up starts with the same Med-Adapter variant
    subparsers = argparse.ArgumentParser(prog="medtuning").add_subparsers(dest="command")
    add_compare_parser(subparsers)
    assert subparsers.choices["compare"].parse_args(["--out", "x"]).methods.split(",")[0] == DEFAULT_TUNING


def test_the_help_names_every_tuning_method_and_only_those():
    """--tuning's help lists the names as literals (no torch for --help): the registry's."""
    from MedTuningCore.models import TUNING_METHODS

    subparsers = argparse.ArgumentParser(prog="medtuning").add_subparsers(dest="command")
    add_finetune_parser(subparsers)
    text = next(a.help for a in subparsers.choices["finetune"]._actions if "--tuning" in a.option_strings)
    named = {item.split()[0] for item in text.split(":", 1)[1].split(",")}
    assert named == set(TUNING_METHODS)


def test_the_postprocessing_choices_are_the_trainings():
    """--postprocessing lists its modes as literals (no torch for --help): finetune's, in order."""
    from MedTuningCore.training.finetune import POSTPROCESSING_MODES

    subparsers = argparse.ArgumentParser(prog="medtuning").add_subparsers(dest="command")
    add_finetune_parser(subparsers)
    action = next(a for a in subparsers.choices["finetune"]._actions if "--postprocessing" in a.option_strings)
    assert tuple(action.choices) == POSTPROCESSING_MODES and action.default == POSTPROCESSING_MODES[0]


def test_compare_reads_finetune_options_with_finetunes_parser(tmp_path, capsys):
    """`--data=x` used to be missed by compare's own hand parsing ("needs --data")."""
    code = main(["compare", "--methods", "head", "--out", str(tmp_path / "out"), "--",
                 f"--data={tmp_path / 'absent.csv'}", "--backbone", "vit_tiny_patch16_224"])
    err = capsys.readouterr().err
    assert code == 2 and "absent.csv" in err and "needs the finetune arguments" not in err


@pytest.mark.parametrize("given,expected", [(None, 0), (12.0, 12.0)])
def test_compare_runs_every_method_to_its_whole_schedule_unless_a_budget_is_given(tmp_path, monkeypatch,
                                                                                  given, expected):
    """finetune's 30-minute default would cut the slower methods shorter than the others."""
    from MedTuningCore.evaluation import compare as module

    seen = []
    monkeypatch.setattr(module, "load_dataset", lambda *a, **k: None)
    monkeypatch.setattr(module, "compare_method", lambda method, base, *a, **k: seen.append(base) or {})
    module.compare(["head", "full"], FinetuneConfig(data="x.csv", max_minutes=given), tmp_path)
    assert [b.max_minutes for b in seen] == [expected, expected]
    assert "--max-minutes" in config_to_argv(seen[0])  # the subprocess gets it either way
