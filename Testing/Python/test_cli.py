"""The `medtuning model-info` command: readable output and clear errors."""

from __future__ import annotations


def test_model_info_text_gives_counts_and_percent_of_full(run_cli):
    result = run_cli("model-info", "--backbone", "swin_tiny_patch4_window7_224", "--decoder", "swin_unet",
                     "--tuning", "med_adapter", "--alpha", "6")
    assert result.returncode == 0, result.stderr
    assert "7,489,098" in result.stdout and "737,568" in result.stdout
    assert "27.58% of full" in result.stdout  # the paper's Table 9 percentage


def test_unknown_backbone_is_a_clear_usage_error(run_cli):
    result = run_cli("model-info", "--backbone", "resnet50")
    assert result.returncode == 2
    assert "unsupported backbone 'resnet50'" in result.stderr
    assert "Traceback" not in result.stderr


def test_slice_size_not_multiple_of_patch_is_explained(run_cli):
    result = run_cli("model-info", "--backbone", "vit_small_patch14_dinov2", "--img-size", "128")
    assert result.returncode == 2
    assert "not a multiple of 14" in result.stderr and "126" in result.stderr


def test_unknown_decoder_is_rejected(run_cli):
    result = run_cli("model-info", "--decoder", "fcn")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
