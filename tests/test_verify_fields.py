"""Field triples and their tables: every shipped (p, q, ω) is what DESIGN.md requires."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mirage_py.verify.fields import DEFAULT_FIELD, FIELDS, Field, exp_table, inverse_table


def _prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))


def test_default_triple_is_designs():
    assert (DEFAULT_FIELD.p, DEFAULT_FIELD.q, DEFAULT_FIELD.omega) == (1_210_787, 605_393, 4)
    assert FIELDS[0] == DEFAULT_FIELD
    assert len(set(FIELDS)) == len(FIELDS) >= 4


@pytest.mark.parametrize("f", FIELDS, ids=str)
def test_shipped_triples_are_valid(f: Field):
    f.check()
    assert _prime(f.p) and _prime(f.q)
    assert (f.p - 1) % f.q == 0
    # ω has order exactly q: ω^q = 1 and, q being prime, ω != 1.
    assert pow(f.omega, f.q, f.p) == 1 and f.omega % f.p != 1
    # Safe prime: -1 is a non-square, so 1 + ω^e is never 0 (sigmoid meets no zero divisor).
    assert f.p == 2 * f.q + 1 and pow(f.p - 1, f.q, f.p) == f.p - 1
    # A K = 4096 matmul of reduced residues is exact in float64 without chunking.
    assert 4096 * (f.p - 1) ** 2 < 2**53


@pytest.mark.parametrize(
    "bad", [Field(1_210_789, 605_394, 4), Field(1_210_787, 605_393, 1), Field(23, 7, 2), Field(23, 11, 22)]
)
def test_check_rejects_bad_triples(bad: Field):
    with pytest.raises(ValueError):
        bad.check()


@pytest.mark.parametrize("f", FIELDS[:2], ids=str)
def test_tables(f: Field):
    rng = np.random.default_rng(0)
    e = rng.integers(0, f.q, 200)
    table = exp_table(f)
    assert table.shape == (f.q,) and table[0] == 1
    assert [int(table[i]) for i in e] == [pow(f.omega, int(i), f.p) for i in e]
    for m in (f.p, f.q):
        inv = inverse_table(m)
        x = rng.integers(1, m, 200)
        assert np.all((inv[x].astype(np.int64) * x) % m == 1)
        assert inv[0] == 0  # inv(0) is defined as 0 (and counted by the executor)
