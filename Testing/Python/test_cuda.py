"""The CUDA path on a real GPU: segmentation, bf16 against float32, a short fine-tuning, and
the out-of-memory fallback with real allocator errors. Skipped without CUDA (a platform
skip: CI has no GPU); `bench/gpu.sh` runs them on a GPU machine.

Tolerances: bf16 keeps 8 bits of mantissa, so logits differ by up to a few hundredths;
the label maps must still agree on at least 99.5 % of the voxels (random weights put many
voxels near a decision boundary; a trained set agrees far better, see docs/INFERENCE.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="platform: no CUDA device here")]

LABEL_AGREEMENT = 0.995


def tiny_segmenter(**inference):
    from segment_helpers import tiny

    from MedTuningCore.inference.segmenter import Segmenter

    torch.manual_seed(0)
    return Segmenter.from_description(tiny(inference={"tile_size": None, **inference}))


def test_cuda_gives_the_cpu_segmentation():
    import SimpleITK as sitk
    from segment_helpers import synthetic_volume

    image = synthetic_volume(size=(60, 50, 24))
    cpu = tiny_segmenter(device="cpu", amp="none").segment_images([image])
    cuda = tiny_segmenter(device="cuda", amp="none").segment_images([image])
    assert cuda.device.startswith("cuda")
    a, b = sitk.GetArrayFromImage(cpu.labels), sitk.GetArrayFromImage(cuda.labels)
    assert (a == b).mean() >= 0.999


def test_bf16_and_float32_agree_on_cuda():
    volume = np.random.default_rng(0).normal(size=(1, 24, 60, 50)).astype(np.float32)
    fp32 = tiny_segmenter(device="cuda", amp="none").predictor.predict_logits(volume)
    bf16_predictor = tiny_segmenter(device="cuda", amp="bf16").predictor
    assert bf16_predictor.amp is torch.bfloat16
    bf16 = bf16_predictor.predict_logits(volume)
    assert (fp32.argmax(0) == bf16.argmax(0)).float().mean() >= LABEL_AGREEMENT
    torch.testing.assert_close(torch.softmax(bf16, 0), torch.softmax(fp32, 0), rtol=0, atol=0.05)


def test_auto_precision_on_cuda_is_bf16_where_supported():
    predictor = tiny_segmenter(device="cuda").predictor
    assert predictor.amp is (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


@pytest.fixture
def exact_float32():
    """Float32 without TF32: cuDNN and cuBLAS run float32 convolutions and products in TF32
    by default (10-bit mantissa), and pick kernels by batch size, so two batchings of the same
    windows differed by up to 4.5e-4 on an H200. These tests check the batching logic, so
    they compare full float32 results."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_flips_batched_on_cuda_equal_flips_one_at_a_time(exact_float32):
    volume = np.random.default_rng(1).normal(size=(1, 16, 56, 56)).astype(np.float32)
    together = tiny_segmenter(device="cuda", amp="none", tta=True).predictor
    one_by_one = tiny_segmenter(device="cuda", amp="none", tta=True).predictor
    one_by_one.flip_batch = 1
    torch.testing.assert_close(together.predict_logits(volume), one_by_one.predict_logits(volume),
                               rtol=1e-4, atol=1e-4)
    assert together.flip_batch == 8


def test_out_of_memory_on_a_real_gpu_falls_back_and_gives_the_same_logits(exact_float32):
    """The allocator is capped so that a batch of windows cannot fit: the predictor must
    halve the batch (real torch.cuda.OutOfMemoryError, not a simulated one)."""
    volume = np.random.default_rng(2).normal(size=(1, 64, 112, 112)).astype(np.float32)
    reference = tiny_segmenter(device="cuda", amp="none", tile_size=56, batch_size=1).predictor.predict_logits(volume)
    predictor = tiny_segmenter(device="cuda", amp="none", tile_size=56, batch_size=64).predictor
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    in_use = torch.cuda.memory_allocated()
    events = []
    torch.cuda.set_per_process_memory_fraction(min(1.0, (in_use + 300 * 2**20) / torch.cuda.get_device_properties(0)
                                                   .total_memory))
    try:
        out = predictor.predict_logits(volume, progress=events.append)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert warnings and all("out of GPU memory" in w for w in warnings), (free, warnings)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


def test_a_short_fine_tuning_on_cuda_writes_a_set(tmp_path):
    from test_process_runner import blob_finetune_args

    from MedTuningCore.cli.app import main

    out = tmp_path / "blob.safetensors"
    argv = blob_finetune_args(tmp_path, out) + ["--device", "cuda", "--epochs", "2", "--max-minutes", "0"]
    assert main(argv) == 0
    assert out.is_file()
    history = json.loads((tmp_path / "blob.run" / "history.json").read_text())
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
