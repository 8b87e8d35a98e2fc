"""Which floating-point precision inference and training run in.

`auto` picks bfloat16 where the hardware computes it natively (and, on a CPU, faster) and
float32 elsewhere:
- CUDA: bf16 where the GPU supports it (Ampere and later), else fp16;
- CPU: bf16 when the processor has bf16 instructions (x86 AVX512-BF16 or AMX-BF16, Arm
  FEAT_BF16, e.g. Apple M2 and later) *and* a short probe finds its bf16 matrix products
  faster than float32; float32 elsewhere, where bf16 would be emulated and slower. The flag
  alone does not say it: on this project's AMD EPYC VMs bf16 made inference 2.1x faster, on
  an Intel Xeon VM with the same flag (AMX hidden) oneDNN ran bf16 products at 0.6-1.14x the
  float32 rate and a bf16 training step took 15.7 s against 10.9 s in float32 (2026-12-01).
  Apple silicon (M2 and later) runs the probe too; what it answers there is not measured.

The FFT branch of the Med-Adapter always runs in float32 (med_adapter.FourierFilter3d).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from functools import cache
from pathlib import Path

import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "none")

# x86 flags (Linux /proc/cpuinfo) and the Arm feature name that mean native bf16 arithmetic
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAG = "bf16"
#: bf16 products must beat float32 by this factor in the probe for `auto` to pick bf16: the
#: bf16 gain elsewhere in a step is smaller (memory-bound layers, the float32 FFT), and the
#: probe has some noise (the Intel Xeon VM: 0.6-1.14x under load; the AMD EPYC VMs ran whole
#: inference 2.1x faster in bf16, the probe itself was not run there)
BF16_MIN_SPEEDUP = 1.3


def cpuinfo_has_bf16(text: str) -> bool:
    """Whether a Linux /proc/cpuinfo lists native bf16 (the `flags` line on x86, the
    `Features` line on Arm)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        words = value.split()
        if key.strip() == "flags" and any(flag in words for flag in X86_BF16_FLAGS):
            return True
        if key.strip() == "Features" and ARM_BF16_FLAG in words:
            return True
    return False


def macos_has_bf16() -> bool:
    """Apple silicon reports FEAT_BF16 through sysctl (1 on M2 and later)."""
    try:
        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                             timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return out.strip() == "1"


OVERRIDE_VARIABLE = "MEDTUNING_CPU_BF16"


def cpu_bf16_override() -> bool | None:
    """$MEDTUNING_CPU_BF16: "1" forces bf16 on the CPU, "0" float32, unset: None (the check
    decides). Read on every call, never cached, so a changed value counts at once. Any other
    value is ignored with a warning that says which values work."""
    value = os.environ.get(OVERRIDE_VARIABLE)
    if value is None or value.strip() == "":
        return None
    if value.strip() in ("0", "1"):
        return value.strip() == "1"
    warnings.warn(f"${OVERRIDE_VARIABLE}={value!r} is ignored: set it to 1 (bf16 on the CPU) or 0 (float32), "
                  "or unset it to let MedTuning decide", stacklevel=2)
    return None


@cache
def cpu_has_native_bf16(platform: str | None = None) -> bool:
    """Whether this CPU's hardware computes bf16 natively (the processor's flags only; the
    override is `cpu_bf16_override`). Windows has no portable way to ask for the bf16 flag
    without a native helper, so it answers False there (`--amp bf16` still works)."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        try:
            return cpuinfo_has_bf16(Path("/proc/cpuinfo").read_text(errors="replace"))
        except OSError:
            return False
    if platform == "darwin":
        return macos_has_bf16()
    return False


@cache
def bf16_matmul_speedup(rows: int = 512, inner: int = 384, cols: int = 1536, repeats: int = 5) -> float:
    """float32 time / bf16 time of one matrix product shaped like a ViT-S MLP layer, on this
    CPU with torch's current threads (best of `repeats` each, interleaved, after a warm-up
    that builds oneDNN's kernels). Takes 0.1-0.3 s; asked once per process. Its own random
    generator: the probe must not move torch's global one."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, inner, generator=generator), torch.randn(inner, cols, generator=generator)
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    best = dict.fromkeys(pairs, float("inf"))
    for round_ in range(repeats + 1):
        for dtype, (x, y) in pairs.items():
            start = time.perf_counter()
            torch.mm(x, y)
            if round_:  # round 0 warms up
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def cpu_auto_bf16() -> bool:
    """What `auto` picks on the CPU: bf16 where the processor has bf16 instructions and the
    probe finds them faster (`bf16_matmul_speedup` >= BF16_MIN_SPEEDUP). $MEDTUNING_CPU_BF16=0/1
    decides alone, without the probe."""
    forced = cpu_bf16_override()
    if forced is not None:
        return forced
    return cpu_has_native_bf16() and bf16_matmul_speedup() >= BF16_MIN_SPEEDUP


def autocast_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` (auto | bf16 | fp16 | none) on `device`; None: float32."""
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_auto_bf16() else None
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None, "none": None}
    if amp not in table:
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    return table[amp]


def precision_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "float32")
