"""Field triples (p, q, ω) as data, and the per-field lookup tables.

A value lives in Z_p (every value) and Z_q (values that may still reach an exp); ω has order
q in Z_p^*, so exp(x) = ω^(x mod q) mod p is a homomorphism from (Z_q, +) to (Z_p^*, ·).
Every shipped p is a safe prime (p = 2q + 1, q prime): then the squares form the subgroup of
order q, so ω = 4 = 2² has order q, and -1 is a non-square (p ≡ 3 mod 4), so 1 + exp(x) is
never 0 and sigmoid never meets a zero divisor. Every p is below 2^20.5, so a matmul with
K ≤ 4096 and reduced operands stays below 2^53 in float64 without chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True)
class Field:
    p: int
    q: int
    omega: int

    def __str__(self) -> str:
        return f"(p={self.p}, q={self.q}, ω={self.omega})"

    def check(self) -> None:
        """Raise ValueError unless p and q are prime, q | p - 1 and ω has order q mod p."""
        if not (_is_prime(self.p) and _is_prime(self.q)):
            raise ValueError(f"{self}: p and q must be prime")
        if (self.p - 1) % self.q:
            raise ValueError(f"{self}: q must divide p - 1")
        if self.omega % self.p in (0, 1) or pow(self.omega, self.q, self.p) != 1:
            raise ValueError(f"{self}: ω must have order q")


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for d in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % d == 0:
            return n == d
    # Deterministic Miller-Rabin for n < 3.3e24 with these bases.
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


DEFAULT_FIELD = Field(1_210_787, 605_393, 4)

# Trials rotate through these (DEFAULT_FIELD first), so a rational constant whose
# difference from another happens to be divisible by one p is still seen by the others.
FIELDS: tuple[Field, ...] = (
    DEFAULT_FIELD,
    Field(1_479_887, 739_943, 4),
    Field(1_479_263, 739_631, 4),
    Field(1_478_987, 739_493, 4),
)


def _powers(base: int, n: int, m: int) -> np.ndarray:
    """[base^0, ..., base^(n-1)] mod m as float64, in blocks (no Python loop over n)."""
    b = 1 << 10
    small = np.empty(b, dtype=np.int64)
    v = 1
    for i in range(b):
        small[i] = v
        v = v * base % m
    step, big = v, np.empty((n + b - 1) // b, dtype=np.int64)
    v = 1
    for i in range(len(big)):
        big[i] = v
        v = v * step % m
    return ((big[:, None] * small[None, :]) % m).reshape(-1)[:n].astype(np.float64)


@cache
def exp_table(f: Field) -> np.ndarray:
    """ω^e mod p for e in [0, q)."""
    return _powers(f.omega, f.q, f.p)


@cache
def exp_table_ext(f: Field) -> np.ndarray:
    """ω^((i - q) mod q) for i in [0, 3q): exp of an exponent reduced only to [-q, 2q)."""
    t = exp_table(f)
    return np.concatenate([t, t, t])


@cache
def exp_split_tables(f: Field, lo_bits: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) with ω^k = hi[k >> lo_bits]·lo[k mod 2^lo_bits] mod p for k in [0, q):
    hi[h] = ω^(2^lo_bits·h), lo[l] = ω^l, as float64 (the compiled exp's small tables)."""
    lo = _powers(f.omega, 1 << lo_bits, f.p)
    hi = _powers(pow(f.omega, 1 << lo_bits, f.p), (f.q >> lo_bits) + 1, f.p)
    return hi, lo


@cache
def inverse_table(m: int) -> np.ndarray:
    """x⁻¹ mod m for x in [0, m), with 0⁻¹ = 0 (m prime). Built from a primitive root g:
    (g^k)⁻¹ = g^(m-1-k)."""
    g = _primitive_root(m)
    pw = _powers(g, m - 1, m).astype(np.int64)
    inv = np.zeros(m, dtype=np.float64)
    inv[pw] = pw[(-np.arange(m - 1)) % (m - 1)]
    return inv


def _primitive_root(m: int) -> int:
    factors, n, d = [], m - 1, 2
    while d * d <= n:
        if n % d == 0:
            factors.append(d)
            while n % d == 0:
                n //= d
        d += 1
    if n > 1:
        factors.append(n)
    for g in range(2, m):
        if all(pow(g, (m - 1) // f, m) != 1 for f in factors):
            return g
    raise ValueError(f"{m} has no primitive root")
