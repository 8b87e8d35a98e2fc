"""The trainer: tuning a Med-Tuning model on annotated cases, without ever losing work.

- Each epoch draws its random patches and augmentations from generators seeded by
  (seed, rank, epoch), so a run resumed from the checkpoint of epoch e continues exactly as
  the uninterrupted run would have.
- A checkpoint is written atomically after every epoch; a crash loses at most that epoch.
- Ctrl-C, SIGTERM or a cancel file stop at the next step; the adapter set of the best epoch
  so far is still written.
- Adam (amsgrad, weight decay 1e-5; the official code's settings), linear warm-up then
  cosine decay, per step; bf16 autocast where the device computes it natively (CUDA, CPUs
  with bf16 instructions that a probe finds faster than float32); optional activation checkpointing and
  gradient accumulation; validation every N epochs with Dice per class; the best epoch is
  kept; optional early stop.
- Under torchrun every rank samples its own patches, DistributedDataParallel averages the
  gradients, and only rank 0 validates and writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..data.prepared import PreparedCase
from ..data.regions import class_probabilities, nested_labels, region_dice
from ..data.sampling import SamplingOptions, training_batch
from ..errors import DivergedError, InputError
from ..evaluation.metrics import dice_per_class
from ..inference.postprocessing import largest_foreground
from ..inference.precision import autocast_dtype, precision_name
from ..inference.sliding_window import InferenceOptions, SlidingWindowPredictor, resolve_device
from ..io.atomic import write_json
from ..io.tensor_files import read_tensor_file, write_tensor_file
from ..models import MedTuningModel
from ..models.inserted import inserted_parameter_ids
from ..progress import ProgressCallback
from ..sets.adapter_set import tuned_state
from .checkpoint import load_checkpoint, restore_optimizer, save_checkpoint
from .losses import region_loss_terms, segmentation_loss_terms


@dataclass
class TrainingConfig:
    epochs: int = 50
    iterations_per_epoch: int = 50
    batch_size: int = 2
    patch: tuple[int, int, int] | None = None  # D, H, W; default (32, slice size, slice size)
    lr: float = 2e-3  # the paper's (Appendix Table 8)
    weight_decay: float = 1e-5
    warmup_epochs: int = 2
    # the first epochs train everything but the inserted modules (Kumar et al. 2022, "LP-FT":
    # the decoder first fits the frozen features, so the adapters then adjust features for
    # a decoder that already works instead of one that is still random)
    head_first_epochs: int = 0
    ce_weight: float = 1.0  # 0 gives the paper's pure soft-Dice loss
    # the cross-entropy weight of each class (background first), or None for equal weights
    ce_class_weights: list[float] | None = None
    accumulate: int = 1
    grad_checkpointing: bool = False
    val_every: int = 1
    early_stop: int | None = None  # stop after this many validations without improvement
    seed: int = 0
    device: str = "auto"
    foreground_fraction: float = 0.33
    augmentation: str = "paper"  # "strong" for a handful of cases (see augmentation.py)
    val_overlap: float = 0.25
    max_minutes: float | None = None  # fit the schedule into this time (see Trainer.fit_to_time_budget)
    # bf16 autocast: auto = where the device computes it natively (CUDA; CPUs with bf16
    # instructions that a probe finds faster, inference/precision.py); none = float32; cuda = on CUDA only (the
    # behaviour before this option existed, kept for resumed runs)
    amp: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingResult:
    best_epoch: int
    best_score: float | None
    best_dice: dict[str, float]
    epochs_run: int
    history: list[dict[str, Any]]
    cancelled: bool
    seconds: float
    seconds_per_step: float
    peak_memory_mb: float
    best_tensors: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)


TRAINING_AMP = ("auto", "bf16", "none", "cuda")
MAX_SKIPPED_STEPS = 10  # non-finite steps in a row before a run is stopped as diverged
#: Below this many steps a time budget's run is said to be too short. In the BraTS
#: cross-validation (docs/results/recipe_cv.md, run 2) the thin enhancing rim's training Dice
#: loss was still 0.90-0.94 after 100 steps and 0.46-0.55 after 250, where held-out ET reached 0.6.
FEW_STEPS = 200


def training_autocast(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training step (the loss is computed in float32 either way)."""
    if amp not in TRAINING_AMP:
        raise InputError(f"amp must be one of {', '.join(TRAINING_AMP)}, got {amp!r}")
    if amp == "cuda":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "auto" and device.type == "cuda":
        # bf16 even on GPUs without native bf16, never inference's fp16 fallback: fp16
        # gradients would need a loss scaler, which this trainer does not have
        return torch.bfloat16
    return autocast_dtype(amp, device)


def distributed() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def learning_rate(config: TrainingConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over `warmup_epochs`, then cosine decay to 0 at the last step."""
    warm = config.warmup_epochs * steps_per_epoch
    total = max(config.epochs * steps_per_epoch, 1)
    if step < warm:
        return config.lr * (step + 1) / warm
    return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of the run in MiB: allocated on the GPU, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return process_peak_memory_mb()


def process_peak_memory_mb() -> float:
    """This process's peak resident memory in MiB, by the platform's own accounting."""
    if sys.platform == "win32":
        return _windows_peak_working_set() / 2**20
    import resource  # POSIX only: imported here so that Windows can import this module

    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # getrusage(2): Linux counts ru_maxrss in KiB, macOS in bytes.
    return max_rss / 2**20 if sys.platform == "darwin" else max_rss / 1024


class ProcessMemoryCounters(ctypes.Structure):
    """PROCESS_MEMORY_COUNTERS (psapi.h); DWORD is 32 bits and SIZE_T pointer-sized on Windows."""

    _fields_ = [("cb", ctypes.c_uint32), ("PageFaultCount", ctypes.c_uint32)] + [
        (name, ctypes.c_size_t) for name in (
            "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
            "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage")]


def _windows_peak_working_set() -> float:
    """PeakWorkingSetSize in bytes from psapi's GetProcessMemoryInfo; NaN if the call fails, so a
    finished training run is never lost to a statistic."""
    # Own WinDLL instances (Windows only), not the shared ctypes.windll: the prototypes set
    # below must not change these functions for other code in the process (Slicer's, say).
    kernel32, psapi = ctypes.WinDLL("kernel32"), ctypes.WinDLL("psapi")
    kernel32.GetCurrentProcess.restype = ctypes.c_void_p  # a pseudo-handle, pointer-sized
    psapi.GetProcessMemoryInfo.argtypes = [ctypes.c_void_p, ctypes.POINTER(ProcessMemoryCounters), ctypes.c_uint32]
    counters = ProcessMemoryCounters()
    counters.cb = ctypes.sizeof(counters)
    if not psapi.GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb):
        return math.nan
    return float(counters.PeakWorkingSetSize)


class StopRequest:
    """Set by SIGINT/SIGTERM or by the presence of a cancel file; checked every step."""

    def __init__(self, cancel_file: Path | None) -> None:
        self.cancel_file = cancel_file
        self.signalled = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signalled = True

    def __bool__(self) -> bool:
        return self.signalled or bool(self.cancel_file and self.cancel_file.exists())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, model: MedTuningModel, train: list[PreparedCase], val: list[PreparedCase],
                 config: TrainingConfig, run_dir: str | os.PathLike, label_names: list[str],
                 progress: ProgressCallback | None = None, cancel_file: str | os.PathLike | None = None) -> None:
        self.rank, self.world = distributed()
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.model = model.to(self.device)
        self.model.set_grad_checkpointing(config.grad_checkpointing)
        self.train_cases, self.val_cases = train, val
        self.config = config
        cfg = model.config
        self.patch = tuple(config.patch or (32, cfg.img_size, cfg.img_size))
        self.run_dir = Path(run_dir)
        self.label_names = label_names
        self.progress = progress or (lambda event: None)
        self.cancel_file = Path(cancel_file) if cancel_file else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        inserted = inserted_parameter_ids(self.model)
        self.inserted_params = [p for p in self.params if id(p) in inserted]
        if config.head_first_epochs and not self.inserted_params:
            raise InputError("--head-first-epochs needs a tuning method that inserts modules into the backbone "
                             "(a Med-Adapter, adapter, LoRA...); this model has none to hold back")
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr, weight_decay=config.weight_decay, amsgrad=True)
        self.network = self.model
        if self.world > 1:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.amp = training_autocast(config.amp, self.device)
        self.class_weights = self.checked_class_weights(config.ce_class_weights)
        if self.world > 1 and self.device.type == "cpu":
            self.amp = self.rank0_precision(self.amp)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch = -1
        self.best_dice: dict[str, float] = {}
        self.best_tensors: dict[str, torch.Tensor] = {}  # kept in memory only without validation
        self.stale = 0
        self.seconds_trained = 0.0  # over all sessions of a resumed run, for the time budget
        self.budget_reported = False
        self.skipped_steps = 0  # non-finite steps skipped in this session

    def checked_class_weights(self, weights: list[float] | None) -> torch.Tensor | None:
        if weights is None:
            return None
        classes = self.model.config.num_classes
        if getattr(self.model.config, "regions", None):
            raise ValueError("class weights apply to the softmax cross-entropy of plain labels, not to regions")
        if len(weights) != classes or min(weights) <= 0:
            raise ValueError(f"need {classes} positive class weights (background first), got {weights}")
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    @staticmethod
    def rank0_precision(amp: torch.dtype | None) -> torch.dtype | None:
        """Rank 0's precision for every rank: each rank's CPU probe times its own products
        and, on a loaded machine, may answer otherwise."""
        flag = torch.tensor([1 if amp is torch.bfloat16 else 0])
        dist.broadcast(flag, 0)
        return torch.bfloat16 if flag.item() else None

    # -- persistence ------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.safetensors"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.safetensors"

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": self.history, "best_score": self.best_score,
                "best_epoch": self.best_epoch, "best_dice": self.best_dice, "stale": self.stale,
                "config": self.config.to_dict(), "seconds_trained": self.seconds_trained,
                "budget_reported": self.budget_reported,
                # what `auto` resolved to: on a CPU a timing probe decides, so a resumed run
                # reuses this answer rather than probing again
                "precision": precision_name(self.amp), "precision_device": self.device.type}

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.checkpoint_path, tuned_state(self.model), self.optimizer, self.state())

    def resume(self, checkpoint: Path | None = None) -> None:
        model_tensors, opt_tensors, state = load_checkpoint(checkpoint or self.checkpoint_path)
        self.model.load_state_dict({k: v.to(self.device) for k, v in model_tensors.items()}, strict=False)
        restore_optimizer(self.optimizer, opt_tensors, state["optimizer"])
        self.epoch = state["epoch"]
        self.history = state["history"]
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.best_dice, self.stale = state["best_dice"], state["stale"]
        self.seconds_trained = float(state.get("seconds_trained", 0.0))
        self.budget_reported = bool(state.get("budget_reported", False))
        if self.config.amp == "auto" and state.get("precision_device") == self.device.type == "cpu":
            self.amp = torch.bfloat16 if state.get("precision") == "bf16" else None
        # a schedule shortened by the time budget stays shortened, so the run resumes exactly
        saved = state.get("config", {})
        self.config.epochs = min(self.config.epochs, int(saved.get("epochs", self.config.epochs)))
        self.config.warmup_epochs = min(self.config.warmup_epochs,
                                        int(saved.get("warmup_epochs", self.config.warmup_epochs)))
        self.config.head_first_epochs = min(self.config.head_first_epochs,
                                            int(saved.get("head_first_epochs", self.config.head_first_epochs)))

    # -- the loop ---------------------------------------------------------------------
    def seed_epoch(self, epoch: int) -> np.random.Generator:
        torch.manual_seed(self.config.seed * 1_000_003 + epoch * 1009 + self.rank)
        return np.random.default_rng([self.config.seed, self.rank, epoch])

    def fit(self) -> TrainingResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stop = StopRequest(self.cancel_file)
        sampling = SamplingOptions(patch=self.patch, foreground_fraction=self.config.foreground_fraction,
                                   augmentation=self.config.augmentation)
        steps = self.config.iterations_per_epoch
        start, step_seconds, step_count = time.perf_counter(), 0.0, 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        cancelled, skipped_in_a_row = False, 0
        try:
            while self.epoch < self.config.epochs and not cancelled:
                rng = self.seed_epoch(self.epoch)
                epoch_start = time.perf_counter()
                self.network.train()
                losses, class_losses = [], []
                for it in range(steps):
                    if stop:
                        cancelled = True
                        break
                    t = time.perf_counter()
                    loss, per_class = self.train_step(rng, sampling, self.epoch * steps + it, steps)
                    skipped_in_a_row = self.note_skipped_step(loss, skipped_in_a_row)
                    if math.isfinite(loss):
                        losses.append(loss)
                        class_losses.append(per_class)
                    step_seconds += time.perf_counter() - t
                    step_count += 1
                    step, total = self.epoch * steps + it + 1, self.config.epochs * steps
                    self.progress({"event": "progress", "stage": "training", "epoch": self.epoch,
                                   "epochs": self.config.epochs, "step": step, "steps": total,
                                   "fraction": step / total, "loss": loss})
                if cancelled:
                    break
                record = {"epoch": self.epoch, "loss": float(np.mean(losses)) if losses else math.nan,
                          "lr": self.optimizer.param_groups[0]["lr"],
                          "class_dice_loss": self.mean_class_losses(class_losses)}
                if self.val_cases and (self.epoch + 1) % self.config.val_every == 0:
                    record["val_dice"], record["val_dice_largest_component"] = self.validate()
                    self.consider_best(record)
                self.history.append(record)
                self.epoch += 1
                self.seconds_trained += time.perf_counter() - epoch_start
                self.fit_to_time_budget()
                if not self.val_cases:  # nothing to choose by: the last epoch is the best
                    self.best_epoch, self.best_tensors = self.epoch - 1, tuned_state(self.model)
                self.save()
                # the fraction after any cut by the time budget, so a log's "left" follows the new plan
                self.progress({"event": "epoch", **record, "epochs": self.config.epochs,
                               "fraction": self.epoch / self.config.epochs})
                if self.config.early_stop and self.stale >= self.config.early_stop:
                    self.progress({"event": "warning", "message": f"early stop: no better validation Dice for "
                                                                  f"{self.stale} validations"})
                    break
                if self.world > 1:
                    dist.barrier()
        finally:
            stop.restore()
        best = self.best_state()
        return TrainingResult(
            best_epoch=self.best_epoch, best_score=self.best_score, best_dice=self.best_dice,
            epochs_run=self.epoch, history=self.history, cancelled=cancelled,
            seconds=time.perf_counter() - start, seconds_per_step=step_seconds / max(step_count, 1),
            peak_memory_mb=peak_memory_mb(self.device), best_tensors=best,
        )

    def fit_to_time_budget(self) -> None:
        """Shorten the schedule when the remaining epochs (training and validation, at the mean
        cost of the epochs so far) would overrun `max_minutes`. The cosine decay is recomputed
        for the new length and the warm-up capped at a quarter of it, so the run still ends at
        a low learning rate. Rank 0 decides for all ranks; the first change is reported, and
        the shortened schedule is kept in the checkpoint, so a resumed run follows it."""
        if not self.config.max_minutes or self.epoch >= self.config.epochs:
            return
        per_epoch = self.seconds_trained / max(self.epoch, 1)
        remaining = self.config.max_minutes * 60 - self.seconds_trained
        affordable = max(self.epoch + int(remaining // per_epoch), self.epoch) if per_epoch > 0 else self.config.epochs
        if self.world > 1:  # every rank must stop after the same epoch
            decision = torch.tensor([affordable], dtype=torch.int64)
            dist.broadcast(decision, 0)
            affordable = int(decision.item())
        if affordable >= self.config.epochs:
            return
        if not self.budget_reported:
            self.progress({"event": "warning", "message": self.budget_message(affordable, per_epoch)})
            self.budget_reported = True
        self.config.epochs = affordable
        self.config.warmup_epochs = min(self.config.warmup_epochs, affordable // 4)
        # the inserted modules get at least half of a shortened schedule, where the epochs run so
        # far allow it (those that ran head-first stay counted, so the record says what ran)
        held = min(self.config.head_first_epochs, max(self.epoch, affordable // 2))
        if self.config.head_first_epochs and held >= affordable:
            self.progress({"event": "warning", "message": (
                f"time budget of {self.config.max_minutes:g} min: no epoch is left for the inserted modules after "
                f"{held} head-first epochs, so only the head trained; give more --max-minutes or fewer "
                "--head-first-epochs")})
        self.config.head_first_epochs = held

    def budget_message(self, affordable: int, per_epoch: float) -> str:
        steps = affordable * self.config.iterations_per_epoch
        message = (f"time budget of {self.config.max_minutes:g} min: training {affordable} epochs instead of "
                   f"{self.config.epochs} ({steps} steps, {per_epoch:.0f} s per epoch here)")
        if steps < FEW_STEPS:
            message += (f". Fewer than {FEW_STEPS} steps rarely learn small or thin structures (see "
                        "docs/FINETUNING.md); for a usable set give it more time, train on a GPU, or use "
                        "smaller patches (command line: --max-minutes, --device cuda, --slice-size, "
                        "--patch-depth)")
        return message

    def train_step(self, rng: np.random.Generator, sampling: SamplingOptions, step: int,
                   steps: int) -> tuple[float, np.ndarray]:
        """One optimiser step: (the loss, each foreground class's soft-Dice loss)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, step, steps)
        total, per_class = 0.0, 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for _ in range(self.config.accumulate):
            x, y = training_batch(self.train_cases, self.config.batch_size, sampling, rng)
            x = torch.from_numpy(x).to(self.device, non_blocking=True)
            y = torch.from_numpy(y).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                logits = self.network(x)
            regions = getattr(self.model.config, "regions", None)
            loss, class_loss = (region_loss_terms(logits, y, regions, self.config.ce_weight) if regions
                                else segmentation_loss_terms(logits, y, self.config.ce_weight, self.class_weights))
            (loss / self.config.accumulate).backward()
            total += float(loss.detach()) / self.config.accumulate
            per_class = per_class + class_loss.cpu().numpy() / self.config.accumulate
        if step < self.config.head_first_epochs * steps:
            for p in self.inserted_params:  # no gradient: the optimiser leaves them (and their state) as they are
                p.grad = None
        if not (math.isfinite(total) and self.gradients_are_finite()):
            # one bad step must not poison the weights: skip it, as a GradScaler would
            self.optimizer.zero_grad(set_to_none=True)
            return math.nan, per_class
        self.optimizer.step()
        return total, per_class

    def mean_class_losses(self, class_losses: list[np.ndarray]) -> dict[str, float]:
        if not class_losses:  # every step of the epoch was skipped
            return dict.fromkeys(self.label_names, math.nan)
        return dict(zip(self.label_names, np.mean(class_losses, axis=0).tolist()))

    def gradients_are_finite(self) -> bool:
        grads = [p.grad for p in self.params if p.grad is not None]
        return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True

    def note_skipped_step(self, loss: float, skipped_in_a_row: int) -> int:
        """Count steps skipped for a non-finite loss or gradient; warn at the first and stop
        the run after MAX_SKIPPED_STEPS in a row (the weights are those of the last good step)."""
        if math.isfinite(loss):
            return 0
        self.skipped_steps += 1
        if self.skipped_steps == 1:
            self.progress({"event": "warning", "message": "a training step gave a non-finite loss or gradient "
                           "and was skipped; the weights are unchanged"})
        if skipped_in_a_row + 1 >= MAX_SKIPPED_STEPS:
            raise DivergedError(f"training diverged: {MAX_SKIPPED_STEPS} steps in a row gave non-finite losses or "
                                f"gradients; lower --lr or check the images' intensities (NaN or huge values). "
                                f"The checkpoint in {self.run_dir} holds the weights of the last good step")
        return skipped_in_a_row + 1

    # -- validation and the best epoch ------------------------------------------------
    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Mean Dice per class over the validation cases, as predicted and with the largest
        foreground component only (rank 0; shared with all ranks)."""
        scores = np.zeros(2 * len(self.label_names))
        if self.rank == 0:
            scores = np.concatenate(validation_scores(self.model, self.val_cases, self.config.val_overlap,
                                                      self.device))
        if self.world > 1:
            tensor = torch.tensor(scores, dtype=torch.float64)
            dist.broadcast(tensor, 0)
            scores = tensor.numpy()
        self.model.train()
        count = len(self.label_names)
        return ({name: float(s) for name, s in zip(self.label_names, scores[:count])},
                {name: float(s) for name, s in zip(self.label_names, scores[count:])})

    def consider_best(self, record: dict[str, Any]) -> None:
        score = float(np.mean(list(record["val_dice"].values())))
        record["val_mean_dice"] = score
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_epoch, self.best_dice, self.stale = score, self.epoch, record["val_dice"], 0
            if self.rank == 0:
                write_tensor_file(self.best_path, tuned_state(self.model), {"epoch": str(self.epoch)})
        else:
            self.stale += 1

    def best_state(self) -> dict[str, torch.Tensor]:
        """Tensors of the best epoch: from best.safetensors, else the current model."""
        if self.best_tensors:
            return self.best_tensors
        if self.best_path.exists():
            return read_tensor_file(self.best_path)[0]
        return tuned_state(self.model)


def validation_dice(model: MedTuningModel, cases: list[PreparedCase], overlap: float,
                    device: torch.device | str = "cpu", options: InferenceOptions | None = None) -> list[float]:
    """Mean Dice per foreground class (per region, for a region model) of sliding-window
    predictions on preprocessed cases."""
    return validation_scores(model, cases, overlap, device, options)[0]


def validation_scores(model: MedTuningModel, cases: list[PreparedCase], overlap: float,
                      device: torch.device | str = "cpu",
                      options: InferenceOptions | None = None) -> tuple[list[float], list[float]]:
    """Mean Dice per foreground class (per region, for a region model) of sliding-window
    predictions on preprocessed cases: as predicted, and with only the largest foreground
    component kept (to choose the set's post-processing from the same predictions).

    By default in float32 on tiles of the training slice size, whatever the machine: the best
    epoch and the figures a set records must not depend on whether this CPU computes bf16."""
    if options is None:
        options = InferenceOptions(device=str(device), overlap=overlap, amp="none", tile_size=model.config.img_size)
    predictor = SlidingWindowPredictor.for_model(model, options)
    regions = model.config.regions
    as_predicted, largest = [], []
    for case in cases:
        outputs = predictor.predict_logits(case.volume)
        pred = nested_labels(class_probabilities(outputs, True)).numpy() if regions else outputs.argmax(0).numpy()
        for scores, labels in ((as_predicted, pred), (largest, largest_foreground(pred))):
            if regions:
                scores.append(region_dice(labels, case.label, regions))
            else:
                scores.append(dice_per_class(labels, case.label, model.config.num_classes))
    return list(np.mean(as_predicted, axis=0)), list(np.mean(largest, axis=0))


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_json(run_dir / "history.json", history)
