"""Sliding-window inference over slabs of slices, with weighted blending.

The model mixes information along D, so windows are slabs of `window_depth` slices (the
whole volume when it is thinner). In-plane, windows are tiles of the model's slice size by
default. With `whole_slices` a ViT takes the whole slice at once (rounded up to its patch
size) when it is at most `WHOLE_SLICE_LIMIT` times the model's slice size per side: every
voxel is computed once, where overlapping tiles compute most of them two to four times.
That is about twice as fast on the CPU but not the default: on the shared BraTS cases it
lowered the mean necrosis Dice of `brats-glioma` by 0.025 (docs/INFERENCE.md), beyond the
0.005 a default may change. Models with a fixed input size (Swin) always use tiles.
Windows overlap; their logits are blended with a Gaussian
or linear-ramp importance map and normalised by the summed weights, so every voxel is a
proper weighted mean.
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
from .precision import AMP_CHOICES, autocast_dtype

BLENDS = ("gaussian", "linear")
#: a whole slice is one tile up to this many times the model's slice size per side (4 x its
#: tokens; attention grows with the square of the token count)
WHOLE_SLICE_LIMIT = 2
#: flipped copies (--tta) per model pass: all 8 on CUDA (a thin volume alone does not fill a
#: GPU), one at a time on the CPU, where a slab of ~100 slices already keeps every core busy:
#: measured on brats-glioma (2 cores, bf16), a profiled segment call with 8 flips took 65.7 s
#: with two per pass, 53.7 s with one at a time (docs/INFERENCE.md)
FLIPS_PER_PASS = {"cuda": 8, "cpu": 1}
FLIPS = [axes for r in range(4) for axes in itertools.combinations((2, 3, 4), r)]


@dataclass
class InferenceOptions:
    """How windows are cut, blended and run. Stored as inference defaults in adapter sets."""

    window_depth: int | None = None  # slices per slab; None: the whole volume up to 2 x the model's
    # reference depth D0 (one slab sees all context, no slice is computed twice), else D0
    tile_size: int | None = None  # in-plane tile; None: the model's slice size
    whole_slices: bool = False  # ViTs take each slice whole (up to WHOLE_SLICE_LIMIT x their slice
    # size): about 2x faster, a small Dice change (see the module docstring)
    overlap: float = 0.5  # fraction of a window shared with its neighbour
    blend: str = "gaussian"
    tta: bool = False  # average over flips of all three axes (8 passes)
    batch_size: int | None = None  # windows per forward pass; None: 1 on CPU, 8 on CUDA (halved on OOM)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str | None = "auto"  # auto (bf16 where the GPU or CPU computes it natively and fast) | bf16 | fp16 | none
    compile: bool = False  # torch.compile the model (CUDA; first call is slow)

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blend not in BLENDS:
            raise InputError(f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        if self.amp not in (*AMP_CHOICES, None):
            raise InputError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}")
        if self.tile_size is not None and self.tile_size < 1:
            raise InputError(f"tile size must be a positive number of pixels, got {self.tile_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for, but CUDA is not available here; use --device cpu")
    return device


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
        self.model_tile = tile_size
        self.size_multiple = size_multiple
        self.flexible_tiles = flexible_tiles
        self.window_depth = options.window_depth or window_depth
        self.batch_size = options.batch_size or (8 if self.device.type == "cuda" else 1)
        self.flip_batch = FLIPS_PER_PASS.get(self.device.type, 1)  # halved on out-of-memory
        self.amp = autocast_dtype(options.amp, self.device)

    @classmethod
    def for_model(cls, model: nn.Module, options: InferenceOptions) -> SlidingWindowPredictor:
        """A predictor sized from a MedTuningModel's configuration (tiles of its slice size,
        slabs of its reference depth; only ViTs take other tile sizes)."""
        from ..models.backbones import backbone_family

        cfg = model.config
        return cls(model, options, cfg.num_outputs, tile_size=cfg.img_size, size_multiple=model.size_multiple,
                   window_depth=cfg.reference_depth, flexible_tiles=backbone_family(cfg.backbone) == "vit")

    def tile_for(self, height: int, width: int) -> tuple[int, int]:
        """The in-plane window: an explicit --tile-size; else, with `whole_slices`, the whole
        slice (rounded up to the size multiple) where the model takes it; else the model's
        slice size."""
        if self.options.tile_size:
            return self.options.tile_size, self.options.tile_size
        m = self.size_multiple
        whole = (-(-height // m) * m, -(-width // m) * m)
        if self.options.whole_slices and self.flexible_tiles and max(whole) <= WHOLE_SLICE_LIMIT * self.model_tile:
            return whole
        return self.model_tile, self.model_tile

    @torch.inference_mode()
    def predict_logits(self, volume: np.ndarray | torch.Tensor, progress: ProgressCallback | None = None
                       ) -> torch.Tensor:
        """Blended logits on the CPU, float32, same spatial size as `volume`."""
        x = torch.as_tensor(volume, dtype=torch.float32)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        depth = self.options.window_depth or (x.shape[1] if x.shape[1] <= 2 * self.window_depth else self.window_depth)
        tile = self.tile_for(*x.shape[2:])
        while True:
            try:
                return self._predict(x, depth, tile, progress).cpu()
            except WindowTooLarge:
                smaller = self.smaller_window(depth, tile)
                if smaller is None:
                    raise MedTuningError("out of GPU memory even with the smallest windows; use --device cpu") from None
                depth, tile = smaller
                notify(progress, {"event": "warning", "message":
                                  f"out of GPU memory: retrying with {depth}-slice slabs of "
                                  f"{tile[0]} x {tile[1]} px tiles"})

    def smaller_window(self, depth: int, tile: tuple[int, int]) -> tuple[int, tuple[int, int]] | None:
        """Thinner slabs first (down to 8 slices), then smaller tiles where the model
        accepts them (ViTs; a Swin model takes only the size it was built for)."""
        if depth > 8:
            return depth // 2, tile
        m = self.size_multiple
        half = tuple((side // 2) // m * m for side in tile)
        if self.flexible_tiles and min(half) >= m:
            return depth, half
        return None

    def _predict(self, x: torch.Tensor, depth: int, tile: tuple[int, int], progress: ProgressCallback | None
                 ) -> torch.Tensor:
        c, d, h, w = x.shape
        # Pad in-plane up to one tile; slabs never need padding, the model takes any number
        # of slices. Zero is the background after normalisation.
        ph, pw = max(h, tile[0]), max(w, tile[1])
        pad = (0, pw - w, 0, ph - h)
        padded = F.pad(x, pad) if any(pad) else x
        window = (min(depth, d), *tile)
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
                if self.options.tta and self.flip_batch > 1:
                    self.flip_batch //= 2
                    notify(progress, {"event": "warning", "message":
                                      f"out of GPU memory: {self.flip_batch} flipped copies per pass"})
                    continue
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
        """Logits of a batch of windows, averaged over the flips of all three axes with
        --tta; `flip_batch` flipped copies are concatenated along the batch per pass (all 8 on
        CUDA, one on the CPU)."""
        flips = FLIPS if self.options.tta else [()]
        group = self.flip_batch if len(flips) > 1 else 1
        n = windows.shape[0]
        total = None
        for first in range(0, len(flips), group):
            chunk = flips[first: first + group]
            inputs = torch.cat([windows.flip(axes) if axes else windows for axes in chunk])
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                out = self.model(inputs)
            out = out.float()
            for i, axes in enumerate(chunk):
                part = out[i * n: (i + 1) * n]
                part = part.flip(axes) if axes else part
                total = part if total is None else total + part
        return total / len(flips)
