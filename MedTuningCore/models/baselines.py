"""Modules of the baseline tuning methods the paper compares against (Table 1, Table 9).

Each module follows its own paper; sizes are chosen so the inserted parameter counts
reproduce the Med-Tuning paper's tables (see `tuning.py` for the configuration).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .inserted import Inserted
from .slice_conv import SliceConv3d


class BottleneckAdapter(Inserted):
    """Houlsby et al. 2019, Eq. 1: x + W_up(act(W_down x)), applied token-wise."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(x)))


class AfterModule(nn.Module):
    """Runs a frozen sub-layer, then an inserted adapter on its output (Houlsby placement:
    after the attention and after the MLP, before each residual addition)."""

    def __init__(self, inner: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.adapter(self.inner(*args, **kwargs))


class AdaptMLP(Inserted):
    """AdaptFormer (Chen et al. 2022): a scaled bottleneck in parallel to the MLP,
    x_l = MLP(LN(x')) + s * ReLU(LN(x') W_down) W_up + x' (their Eq. 2-3, s = 0.1)."""

    def __init__(self, dim: int, hidden: int = 64, scale: float = 0.1) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        self.scale = scale
        # AdaptFormer zero-initialises the up-projection so training starts from the backbone.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.down(x))) * self.scale


class ParallelMLP(nn.Module):
    """The frozen MLP with an AdaptMLP beside it, both reading the normalised tokens."""

    def __init__(self, mlp: nn.Module, adapter: AdaptMLP) -> None:
        super().__init__()
        self.inner = mlp
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.adapter(x)


class STAdapter(Inserted):
    """ST-Adapter (Pan et al. 2022): x + W_up(DWConv3d_(3,1,1)(W_down x)) before each block.

    The depth-wise convolution runs across slices (their temporal axis); the up-projection
    starts at zero so the block initially sees the plain backbone's input.
    """

    def __init__(self, dim: int, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.conv = SliceConv3d(hidden, hidden, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None, depth: int
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens [B*D, Hs, Ws, C]; the inter-stage state (a Med-Adapter's) passes through."""
        n, hs, ws, _ = x.shape
        z = self.down(x)
        z = z.view(n // depth, depth, hs, ws, -1).permute(0, 4, 1, 2, 3)
        z = self.conv(z).permute(0, 2, 3, 4, 1).reshape(n, hs, ws, -1)
        return x + self.up(z), state


class LoRAUpdate(Inserted):
    """Low-rank update B A x (Hu et al. 2021), zero at initialisation (B = 0)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.empty(rank, in_features))
        self.b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a.t() @ self.b.t()) * self.scaling


class LoRAQKV(nn.Module):
    """A frozen fused qkv projection with low-rank updates on the query and value parts,
    the placement LoRA recommends (Hu et al. 2021, Sec. 7.1)."""

    def __init__(self, qkv: nn.Linear, rank: int = 4, alpha: float = 4.0) -> None:
        super().__init__()
        self.inner = qkv
        dim = qkv.out_features // 3
        self.query = LoRAUpdate(qkv.in_features, dim, rank, alpha)
        self.value = LoRAUpdate(qkv.in_features, dim, rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        zeros = torch.zeros_like(out[..., : self.query.b.shape[0]])
        return out + torch.cat([self.query(x), zeros, self.value(x)], dim=-1)


class Prompts(Inserted):
    """Learnable prompt tokens (VPT, Jia et al. 2022), initialised uniformly as in VPT."""

    def __init__(self, count: int, dim: int, patch_area: int) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / float(3 * patch_area + dim))
        self.tokens = nn.Parameter(torch.empty(1, count, dim).uniform_(-bound, bound))

    def forward(self, batch: int) -> torch.Tensor:
        return self.tokens.expand(batch, -1, -1)


class PromptedWindowAttention(nn.Module):
    """Swin window attention that also attends to prompt tokens.

    A Swin block has no global token sequence to prepend prompts to, so each window's
    queries attend to [prompts, window tokens]: the prompts act as extra keys and values
    projected by the block's own frozen qkv weights, with no relative-position bias.
    """

    def __init__(self, attn: nn.Module, prompts: Prompts) -> None:
        super().__init__()
        self.inner = attn
        self.prompts = prompts

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        attn = self.inner
        b_, n, c = x.shape
        heads = attn.num_heads
        p = self.prompts(b_)
        qkv = attn.qkv(torch.cat([p, x], dim=1)).reshape(b_, p.shape[1] + n, 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q = q[:, :, p.shape[1]:]
        bias = attn._get_rel_pos_bias().expand(b_, -1, -1, -1)
        if mask is not None:
            windows = mask.shape[0]
            bias = (bias.view(-1, windows, heads, n, n) + mask.view(1, windows, 1, n, n)).view(b_, heads, n, n)
        bias = F.pad(bias, (p.shape[1], 0))  # prompts: no positional bias, never masked
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(b_, n, -1)))
