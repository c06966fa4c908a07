"""The compiled kernels of verify/native.py: the same residues as the NumPy path they
replace (exp, the product-and-reduction of a quotient), whole graphs and verdicts identical
with and without them, and the fallback when there is no compiler."""

from __future__ import annotations

import numpy as np
import pytest

from mirage_py.benchmarks import all_benchmarks
from mirage_py.verify import equivalent, native
from mirage_py.verify.ffexec import (
    FFTensor,
    FieldOps,
    Res,
    _exp_sums,
    _mul_reduce,
    canon,
    residues,
    run_ff,
    sample_inputs,
)
from mirage_py.verify.fields import FIELDS, exp_split_tables, exp_table_ext

needs_cc = pytest.mark.skipif(native.kernels() is None, reason="no C compiler: the NumPy path is the only one")


@pytest.fixture
def numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIRAGE_PY_NATIVE", "0")


def test_split_tables():
    for f in FIELDS:
        hi, lo = exp_split_tables(f, native.LO_BITS)
        k = np.random.default_rng(0).integers(0, f.q, 5000)
        assert np.array_equal(hi[k >> native.LO_BITS] * lo[k & ((1 << native.LO_BITS) - 1)] % f.p, exp_table_ext(f)[k])


@needs_cc
@pytest.mark.parametrize("field", FIELDS)
def test_exp_kernel_matches_the_table(field, monkeypatch):
    rng = np.random.default_rng(1)
    q, table = field.q, exp_table_ext(field)
    edges = [0, 1, -1, q, -q, q - 1, -q + 1, 2 * q, q // 2, -(q // 2), q * 12345, -q * 12345 - 1]
    for bound in (q - 1.0, 2.0**46, 2.0**53 - 2 * q - 1):
        v = rng.integers(-int(bound), int(bound), 70_000).astype(np.float64)
        v[: len(edges)] = [e for e in edges if abs(e) <= bound] + [0] * sum(abs(e) > bound for e in edges)
        for shape in ((70_000,), (7, 100, 100), (100, 700)):
            r = Res(v.reshape(shape), bound, False)
            got = _exp_sums(r, q, table, field, sums=False)[0]
            monkeypatch.setenv("MIRAGE_PY_NATIVE", "0")
            ref = _exp_sums(r, q, table, field, sums=False)[0]
            monkeypatch.delenv("MIRAGE_PY_NATIVE")
            assert np.array_equal(got, ref) and got.shape == ref.shape
        # a permuted view (a folded matmul's result) keeps its layout, as the NumPy path does
        r = Res(v.reshape(100, 700).T, bound, False)
        assert np.array_equal(_exp_sums(r, q, table, field, sums=False)[0], table.take(canon(r, q) + q))


@needs_cc
@pytest.mark.parametrize(
    "xs, ys",
    [
        ((3, 700, 50), (3, 700, 1)),  # a row scale
        ((2, 1, 40_000), (2, 5, 1)),
        ((3, 700, 50), (3, 700, 50)),  # same shape
        ((700, 50), (50,)),  # a column scale: x contiguous, y along the columns
        ((5, 1), (5, 300)),  # the scale first
        ((4, 3, 20), (4, 1, 20)),  # three axes after merging: the NumPy path
        ((), ()),
        ((1, 1), (1, 1)),
    ],
)
def test_mul_center_kernel_matches_numpy(xs, ys, monkeypatch):
    rng = np.random.default_rng(2)
    f = FIELDS[2]
    x, y = rng.integers(-(2**26), 2**26, xs), rng.integers(0, f.p, ys)
    rx, ry = Res(x.astype(np.float64), 2.0**26, False), Res(y.astype(np.float64), f.p - 1.0, True)
    got = _mul_reduce(rx, ry, f.p)
    monkeypatch.setenv("MIRAGE_PY_NATIVE", "0")
    ref = _mul_reduce(rx, ry, f.p)
    assert got[1] == ref[1] and got[0].b == ref[0].b and np.array_equal(got[0].a, ref[0].a)
    # transposed operands: strided rows
    if x.ndim == 2 and y.ndim == 2:
        xt, yt = Res(x.T.astype(np.float64), 2.0**26, False), Res(y.T.astype(np.float64), f.p - 1.0, True)
        ref = _mul_reduce(xt, yt, f.p)
        monkeypatch.delenv("MIRAGE_PY_NATIVE")
        assert np.array_equal(_mul_reduce(xt, yt, f.p)[0].a, ref[0].a)


@needs_cc
@pytest.mark.parametrize("name", ["rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans"])
def test_graphs_and_verdicts_identical_without_the_kernels(name, monkeypatch):
    b = all_benchmarks()[name]
    spec = b.spec("small")
    ins = sample_inputs(spec.input_names, [spec.types[t].dims for t in spec.inputs], 3)
    for g in [spec, *b.experts("small").values()]:
        for f in FIELDS[:2]:
            got = [residues(y, f.p) for y in run_ff(g, ins, FieldOps(f, key=3))]
            monkeypatch.setenv("MIRAGE_PY_NATIVE", "0")
            ref = [residues(y, f.p) for y in run_ff(g, ins, FieldOps(f, key=3))]
            monkeypatch.delenv("MIRAGE_PY_NATIVE")
            assert all(np.array_equal(a, c) for a, c in zip(got, ref))
    ex = next(iter(b.experts("small").values()))
    v = equivalent(spec, ex).to_json()
    monkeypatch.setenv("MIRAGE_PY_NATIVE", "0")
    assert equivalent(spec, ex).to_json() == v


def test_exp_without_the_kernels(numpy_only):
    f = FIELDS[0]
    v = np.random.default_rng(4).integers(-(2**40), 2**40, 30_000)
    got = canon(FieldOps(f).exp(FFTensor(Res(v.astype(np.float64), 2.0**40, False), lift=True)).p, f.p)
    assert native.kernels() is None
    assert got.tolist() == [pow(f.omega, int(x) % f.q, f.p) for x in v]


def test_no_compiler_means_no_kernels(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert native._load() is None
    # a compiler that fails: every variant is tried once, none is cached, and the failures
    # are remembered (the next process does not run the compiler again)
    cc, runs = tmp_path / "failing-cc", tmp_path / "runs"
    cc.write_text(f"#!/bin/sh\necho x >> {runs}\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert native._load() is None
    assert not list((tmp_path / "cache").rglob("*.so"))
    assert len(runs.read_text().split()) == len(native._variants())
    assert native._load() is None
    assert len(runs.read_text().split()) == len(native._variants())


@needs_cc
def test_kernels_cached_by_source(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native._load() is not None
    libs = list((tmp_path / "mirage-py").glob("ffkernels-*.so"))
    assert len(libs) == 1
    mtime = libs[0].stat().st_mtime_ns
    assert native._load() is not None  # loaded from the cache, not rebuilt
    assert [p.stat().st_mtime_ns for p in (tmp_path / "mirage-py").glob("ffkernels-*.so")] == [mtime]
