"""Training checkpoints: one safetensors file holding the tuned tensors, the optimiser's
tensors and, as JSON metadata, everything else (epoch, step, history, optimiser settings).
One file, written to a temporary name and renamed: a crash never leaves a half-written or
mismatched checkpoint. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..io.tensor_files import TensorFileError, read_tensor_file, write_tensor_file

STATE_KEY = "medtuning_training_state"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars["state"].setdefault(str(index), {})[key] = value
    return tensors, scalars


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entry in scalars.get("state", {}).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def save_checkpoint(path: str | os.PathLike, model_tensors: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    opt_tensors, opt_scalars = optimizer_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in model_tensors.items()} | opt_tensors
    write_tensor_file(path, tensors, {STATE_KEY: json.dumps({**state, "optimizer": opt_scalars})})


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model tensors, optimiser tensors, state) of a checkpoint."""
    tensors, metadata = read_tensor_file(Path(path))
    if STATE_KEY not in metadata:
        raise TensorFileError(f"{path}: not a MedTuning training checkpoint (no training state in its metadata); "
                              f"start the run again without --resume")
    state = json.loads(metadata[STATE_KEY])
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    opt = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
    return model, opt, state
