"""Sliding-window inference over slabs of slices, with weighted blending.

The model mixes information along D, so windows are slabs of `window_depth` slices (the
whole volume when it is thinner) and in-plane tiles of the model's slice size. Windows
overlap; their logits are blended with a Gaussian or linear-ramp importance map and
normalised by the summed weights, so every voxel is a proper weighted mean.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, MedTuningError
from ..progress import ProgressCallback, notify

BLENDS = ("gaussian", "linear")


@dataclass
class InferenceOptions:
    """How windows are cut, blended and run. Stored as inference defaults in adapter sets."""

    window_depth: int | None = None  # slices per slab; None: the whole volume up to 2 x the model's
    # reference depth D0 (one slab sees all context, no slice is computed twice), else D0
    tile_size: int | None = None  # in-plane tile; None: the model's slice size
    overlap: float = 0.5  # fraction of a window shared with its neighbour
    blend: str = "gaussian"
    tta: bool = False  # average over flips of all three axes (8 passes)
    batch_size: int | None = None  # windows per forward pass; None: 1 on CPU, 8 on CUDA (halved on OOM)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str | None = "auto"  # auto (bf16 on CUDA, none on CPU) | bf16 | fp16 | None
    compile: bool = False  # torch.compile the model (CUDA; first call is slow)

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blend not in BLENDS:
            raise InputError(f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for, but CUDA is not available here; use --device cpu")
    return device


def autocast_dtype(options: InferenceOptions, device: torch.device) -> torch.dtype | None:
    amp = options.amp
    if amp == "auto":
        if device.type != "cuda":
            return None  # CPU autocast is slower than float32 for these models
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, None: None, "none": None}[amp]


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Evenly spread starts so windows cover [0, size) and neighbours overlap >= overlap."""
    if size <= window:
        return [0]
    count = math.ceil((size - window) / (window * (1 - overlap))) + 1
    return sorted({round(i * (size - window) / (count - 1)) for i in range(count)})


def importance_map(shape: tuple[int, int, int], blend: str) -> torch.Tensor:
    """Weights peaking at the window centre; never zero so every voxel gets a weight."""
    axes = []
    for n in shape:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        if blend == "gaussian":
            sigma = n / 8  # as nnU-Net (Isensee et al. 2021)
            w = torch.exp(-0.5 * (x / sigma) ** 2)
        else:
            w = 1 - x.abs() / (n / 2 + 1)
        axes.append(w / w.max())
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return weights.clamp_min(1e-3).float()


class WindowTooLarge(Exception):
    """Raised internally when a single window does not fit in GPU memory."""


@dataclass
class WindowPlan:
    window: tuple[int, int, int]
    starts: list[tuple[int, int, int]]


def plan_windows(shape: tuple[int, int, int], window: tuple[int, int, int], overlap: float) -> WindowPlan:
    grids = [window_starts(s, w, overlap) for s, w in zip(shape, window)]
    return WindowPlan(window, list(itertools.product(*grids)))


class SlidingWindowPredictor:
    """Runs a volume model over windows of a [C, D, H, W] volume; returns logits [K, D, H, W]."""

    def __init__(self, model: nn.Module, options: InferenceOptions, num_classes: int,
                 tile_size: int, size_multiple: int, window_depth: int, flexible_tiles: bool = True) -> None:
        self.options = options
        self.device = resolve_device(options.device)
        self.model = model.to(self.device).eval()
        if options.compile:
            self.model = torch.compile(self.model)
        self.num_classes = num_classes
        self.tile_size = options.tile_size or tile_size
        self.size_multiple = size_multiple
        self.flexible_tiles = flexible_tiles
        self.window_depth = options.window_depth or window_depth
        self.batch_size = options.batch_size or (8 if self.device.type == "cuda" else 1)
        self.amp = autocast_dtype(options, self.device)

    @classmethod
    def for_model(cls, model: nn.Module, options: InferenceOptions) -> SlidingWindowPredictor:
        """A predictor sized from a MedTuningModel's configuration (tiles of its slice size,
        slabs of its reference depth; only ViTs take other tile sizes)."""
        from ..models.backbones import backbone_family

        cfg = model.config
        return cls(model, options, cfg.num_outputs, tile_size=cfg.img_size, size_multiple=model.size_multiple,
                   window_depth=cfg.reference_depth, flexible_tiles=backbone_family(cfg.backbone) == "vit")

    @torch.inference_mode()
    def predict_logits(self, volume: np.ndarray | torch.Tensor, progress: ProgressCallback | None = None
                       ) -> torch.Tensor:
        """Blended logits on the CPU, float32, same spatial size as `volume`."""
        x = torch.as_tensor(volume, dtype=torch.float32)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        depth = self.options.window_depth or (x.shape[1] if x.shape[1] <= 2 * self.window_depth else self.window_depth)
        tile = self.tile_size
        while True:
            try:
                return self._predict(x, depth, tile, progress).cpu()
            except WindowTooLarge:
                smaller = self.smaller_window(depth, tile)
                if smaller is None:
                    raise MedTuningError("out of GPU memory even with the smallest windows; use --device cpu") from None
                depth, tile = smaller
                notify(progress, {"event": "warning", "message":
                                  f"out of GPU memory: retrying with {depth}-slice slabs of {tile} px tiles"})

    def smaller_window(self, depth: int, tile: int) -> tuple[int, int] | None:
        """Thinner slabs first (down to 8 slices), then smaller tiles where the model
        accepts them (ViTs; a Swin model takes only the size it was built for)."""
        if depth > 8:
            return depth // 2, tile
        half = (tile // 2) // self.size_multiple * self.size_multiple
        if self.flexible_tiles and half >= self.size_multiple:
            return depth, half
        return None

    def _predict(self, x: torch.Tensor, depth: int, tile: int, progress: ProgressCallback | None) -> torch.Tensor:
        c, d, h, w = x.shape
        # Pad in-plane up to one tile (and to the size multiple); slabs never need padding,
        # the model takes any number of slices.
        ph, pw = max(h, tile), max(w, tile)
        pad = (0, pw - w, 0, ph - h)
        padded = F.pad(x, pad) if any(pad) else x
        window = (min(depth, d), tile, tile)
        plan = plan_windows(padded.shape[1:], window, self.options.overlap)
        weights = importance_map(window, self.options.blend).to(x.device)
        logits = torch.zeros((self.num_classes, *padded.shape[1:]), dtype=torch.float32, device=x.device)
        norm = torch.zeros(padded.shape[1:], dtype=torch.float32, device=x.device)
        batch = self.batch_size
        done = 0
        while done < len(plan.starts):
            starts = plan.starts[done: done + batch]
            boxes = [tuple(slice(s, s + n) for s, n in zip(start, window)) for start in starts]
            windows = torch.stack([padded[(slice(None), *box)] for box in boxes])
            try:
                out = self._forward(windows)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if batch == 1:
                    raise WindowTooLarge from None
                batch = max(1, batch // 2)
                self.batch_size = batch
                notify(progress, {"event": "warning", "message": f"out of GPU memory: batch of {batch} windows"})
                continue
            for box, o in zip(boxes, out):
                logits[(slice(None), *box)] += o * weights
                norm[box] += weights
            done += len(starts)
            notify(progress, {"event": "progress", "stage": "inference", "fraction": done / len(plan.starts)})
        return (logits / norm)[:, :, :h, :w]

    def _forward(self, windows: torch.Tensor) -> torch.Tensor:
        flips = [()]
        if self.options.tta:
            flips = [f for r in range(4) for f in itertools.combinations((2, 3, 4), r)]
        total = None
        for axes in flips:
            inp = windows.flip(axes) if axes else windows
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                out = self.model(inp)
            out = out.float()
            out = out.flip(axes) if axes else out
            total = out if total is None else total + out
        return total / len(flips)
