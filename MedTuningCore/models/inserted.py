"""Marker for modules a tuning method inserts into the frozen backbone.

The paper counts "inserted" parameters separately from the backbone and decoder; every
module that does not exist in the plain model derives from `Inserted`, so counting and
freezing never depend on parameter names.
"""

from __future__ import annotations

from torch import nn


class Inserted(nn.Module):
    """Base class of every module a tuning method adds to the plain backbone."""


def inserted_parameter_ids(model: nn.Module) -> set[int]:
    """ids of all parameters that live inside an `Inserted` module."""
    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, Inserted):
            ids.update(id(p) for p in module.parameters())
    return ids
