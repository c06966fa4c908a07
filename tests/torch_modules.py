"""Small torch modules and functions that tests/test_frontend_torch.py loads through the
frontend (`tests/torch_modules.py:NAME`). Weights are seeded, so each builds the same way in
the frontend and in the test that compares with torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _param(gen: torch.Generator, *dims: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*dims, generator=gen) * dims[0] ** -0.5)


class RMSNormWeightLinear(nn.Module):
    """LLaMA's RMSNorm (with its gain) and an nn.Linear, 3-D input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.gain = nn.Parameter(1 + 0.1 * torch.randn(32))
        self.proj = nn.Linear(32, 48, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
        return self.proj(self.gain * h)


class FunctionalRMSNorm(nn.Module):
    """F.rms_norm, which export decomposes into pow/mean/add/rsqrt/mul."""

    def __init__(self) -> None:
        super().__init__()
        self.W = _param(_gen(2), 32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (32,), eps=1e-6) @ self.W


class GatedMLPDown(nn.Module):
    """(silu(x W1) * (x W3)) W2 with parameters in the x @ W layout."""

    def __init__(self) -> None:
        super().__init__()
        gen = _gen(3)
        self.W1, self.W3, self.W2 = _param(gen, 32, 64), _param(gen, 32, 64), _param(gen, 64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.silu(x @ self.W1) * (x @ self.W3)) @ self.W2


class LinearBias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.lin = nn.Linear(16, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class NoOps(nn.Module):
    """Dropout (eval), clone, contiguous, detach and size-1 views that change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.W = _param(_gen(5), 16, 8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(x).clone().contiguous().detach()
        h = F.dropout(h, 0.3, training=self.training)
        h = h.unsqueeze(0).squeeze(0)
        return (h @ self.W).view(1, 4, 8).reshape(4, 8)


class UpcastRMSNorm(nn.Module):
    """LLaMA's RMSNorm: computed in float32 whatever the input dtype, cast back, gained."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(1 + 0.1 * torch.randn(32, generator=_gen(10)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.gain * h.to(x.dtype)


class Elementwise(nn.Module):
    """Every scalar form: tensor-scalar and scalar-tensor arithmetic, rsub, alpha, pow,
    one-element tensor constants, and the unary ops."""

    shift: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.linspace(-1, 1, 8))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = (x + 0.5) * 3 - 1.25
        b = 2.0 - x / 4 + torch.tensor(0.75) * y
        c = torch.add(x, y, alpha=2) - torch.sub(y, x, alpha=0.5)
        d = 1.0 / (x * x + 1) + torch.reciprocal(y * y + 2) + torch.sqrt(y * y + 1) + (x * x + 3).pow(-1.5)
        e = torch.exp(-x) + torch.sigmoid(y) + F.relu(x - self.shift) + F.gelu(y) + F.gelu(x, approximate="tanh")
        f = (x * x + 1).pow(0.5) + (y * y) ** 1
        return a, b, c, d, e, f


class Reductions(nn.Module):
    """sum/mean with and without keepdim over one and several dims, softmax over a middle
    dim, a reduction seen through unsqueeze, and broadcasting through expand."""

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        total = x.sum(-1)  # (2, 4): the IR's (2, 4, 1) seen without its last dim
        per_row = x.mean(dim=(1, 2), keepdim=True)
        probs = torch.softmax(x, dim=1)
        back = total.unsqueeze(-1) * x  # a keepdim-less sum made broadcastable again
        wide = s.expand(2, 4, 8) * x  # s is (2, 4, 1)
        return total, per_row, probs, back, wide, x.sum()


class Attention(nn.Module):
    """softmax(q k^T * scale) v over heads, the key transposed in forward."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1 / 8)
        return torch.bmm(F.softmax(scores, dim=-1), v)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.W = _param(_gen(6), 8, 8)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([x @ self.W, y, x], dim=-1).permute(1, 0).t()


class MatmulForms(nn.Module):
    """mm, addmm with beta/alpha, bmm, and F.linear on a weight also used plainly."""

    def __init__(self) -> None:
        super().__init__()
        gen = _gen(11)
        self.A = _param(gen, 8, 8)
        self.b = nn.Parameter(torch.randn(8, generator=gen))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = torch.mm(x, self.A) + torch.addmm(self.b, x, self.A, beta=0.5, alpha=2)
        return p, torch.bmm(y, y.transpose(1, 2)), F.linear(x, self.A, self.b)


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = _gen(7)
        self.A, self.B = _param(gen, 8, 8), _param(gen, 8, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.A, torch.relu(x @ self.B)


class SharedWeight(nn.Module):
    """One weight used both plainly and transposed: stored once, with a transpose op."""

    def __init__(self) -> None:
        super().__init__()
        self.W = _param(_gen(8), 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W + x @ self.W.t()


def scaled_gated(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """A function, not a module: its arguments are all runtime inputs."""
    return F.silu(x @ w1) * (x @ w2) * 0.5


def optional_bias(x: torch.Tensor, scale: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Arguments with defaults may be left out, from the right."""
    y = x if scale is None else x * scale
    return y if bias is None else y + bias


instance = GatedMLPDown()  # NAME may name an instance too


# -- modules the frontend must reject ---------------------------------------------------------


class NeedsArgs(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width


class NotAModule:
    pass


class Tanh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) + 1  # tanh is no IR op


class MergeDims(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(4, 16) * 2  # (8, 8) -> (4, 16) moves data


class SwapBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1) + 1  # the IR swaps the last two dims only


class SqueezedSum(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.sum(-1) * y  # (4,) * (4,): the IR holds the sum as (4, 1)


class ArgMax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(-1)


class CountsCalls(nn.Module):
    calls: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return x * 2


class TrainingDropout(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, 0.5, training=True)


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("broken forward")
