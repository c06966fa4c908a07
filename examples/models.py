"""Small PyTorch modules for `mirage-py optimize examples/models.py:NAME --inputs ...`.

Each builds with no arguments and seeded random weights (no download, the same weights on
every machine). Sizes are the benchmarks' `small` sizes; weights are stored the way the
benchmarks' specs take them (`x @ W`, W of shape (k, n)), so a module's spec has the same
structure as its benchmark's. Suggested inputs:

    RMSNormLinear  x=2x256           (benchmark rmsnorm, small: Y = rms_norm(x) @ W)
    GatedMLP       x=8x256           (benchmark gated_mlp, small: silu(x @ W1) * (x @ W2))
    LlamaMLP       x=8x256           (the gated MLP with its down projection)
    LoRALinear     x=16x64           (benchmark lora, small: x @ W + (x @ A) @ B)
    Attention      q=2x64x64 k=2x256x64 v=2x256x64   (softmax(q @ k^T / 8) @ v)
"""

from __future__ import annotations

import torch
from torch import nn


def _randn(gen: torch.Generator, *dims: int, std: float = 1.0) -> nn.Parameter:
    return nn.Parameter(torch.randn(*dims, generator=gen) * std)


class RMSNormLinear(nn.Module):
    """Y = (x / sqrt(mean(x^2) + eps)) @ W, the RMSNorm-then-linear of LLaMA-style blocks."""

    def __init__(self, k: int = 256, n: int = 384, eps: float = 1e-6, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.eps = eps
        self.W = _randn(gen, k, n, std=k**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return h @ self.W


class GatedMLP(nn.Module):
    """Y = silu(x @ W1) * (x @ W2): the gate of a LLaMA MLP."""

    def __init__(self, k: int = 256, n: int = 256, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.W1 = _randn(gen, k, n, std=k**-0.5)
        self.W2 = _randn(gen, k, n, std=k**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x @ self.W1) * (x @ self.W2)


class LlamaMLP(nn.Module):
    """Y = (silu(x W1) * (x W3)) W2, with nn.Linear layers (no bias) as LLaMA writes it."""

    def __init__(self, k: int = 256, n: int = 256, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # nn.Linear draws its init from the global generator
        self.w1 = nn.Linear(k, n, bias=False)
        self.w3 = nn.Linear(k, n, bias=False)
        self.w2 = nn.Linear(n, k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class LoRALinear(nn.Module):
    """Y = x @ W + (x @ A) @ B: a frozen linear layer plus a rank-r adapter."""

    def __init__(self, k: int = 64, n: int = 256, r: int = 16, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.W = _randn(gen, k, n, std=k**-0.5)
        self.A = _randn(gen, k, r, std=k**-0.5)
        self.B = _randn(gen, r, n, std=r**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W + (x @ self.A) @ self.B


class Attention(nn.Module):
    """O = softmax(q @ k^T * d^-1/2) @ v, per head; q (h, s, d), k and v (h, kv, d)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scale = q.shape[-1] ** -0.5
        return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v
