"""The Ray executor (search/executors.py): the same sub-spaces as local processes, run as
Ray tasks on a local Ray instance; a missing Ray is a one-line usage error."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cache import SPEC, TINY  # tests/ is on sys.path (pytest's rootdir-relative import)

import mirage_py as mpy
from mirage_py.cli import main
from mirage_py.search.cache import ResultCache
from mirage_py.search.enumerate import Budget, SearchResult
from mirage_py.search.executors import SUBSPACES, search_subspaces


def _same(a: SearchResult, b: SearchResult) -> None:
    assert [(c.hash, c.cost) for c in a.candidates] == [(c.hash, c.cost) for c in b.candidates]
    assert a.matched == b.matched
    assert a.stats.states == b.stats.states and a.stats.stop_reason == b.stats.stop_reason


def test_without_ray_the_ray_executor_is_a_usage_error(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "spec.json"
    mpy.save(SPEC, spec)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    assert main(["optimize", str(spec), "-o", str(tmp_path / "out"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "install mirage-py[cluster]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert main(["optimize", str(spec), "-o", str(tmp_path / "out"), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


def test_an_unreachable_cluster_is_a_usage_error(tmp_path, capsys):
    pytest.importorskip("ray")
    spec = tmp_path / "spec.json"
    mpy.save(SPEC, spec)
    args = ["optimize", str(spec), "-o", str(tmp_path / "out"), "--executor", "ray", "--ray-address", "127.0.0.1:1"]
    assert main(args) == 2  # nothing listens on port 1
    assert "cannot reach Ray at 127.0.0.1:1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 << 20, log_to_driver=False)
    yield
    ray.shutdown()


# About 15 s here (8 s of it starting Ray): under the 30 s that would make it slow.
def test_ray_tasks_give_the_local_result(local_ray, tmp_path):
    """An exhausted search of the TINY space: as Ray tasks, the very result of the same
    sub-spaces on this process (what --jobs 1 computes with the cache on); and the same
    best cost as one undivided search (--jobs 1 --no-cache)."""
    on_ray = search_subspaces(SPEC, TINY, Budget(), executor="ray", jobs=2)
    assert on_ray.info["executor"] == "ray" and on_ray.info["parts"] == SUBSPACES
    assert on_ray.stats.stop_reason == "exhausted" and on_ray.best is not None
    local = search_subspaces(SPEC, TINY, Budget(), cache=tmp_path / "c.sqlite3")
    assert local.info["parts"] == SUBSPACES
    _same(on_ray, local)
    whole = search_subspaces(SPEC, TINY, Budget())
    assert whole.info["parts"] == 1 and whole.stats.stop_reason == "exhausted" and whole.best is not None
    assert on_ray.best.cost == whole.best.cost and on_ray.best.kernels == whole.best.kernels
    # With the cache on, Ray records its sub-spaces like any executor: a rerun is a hit.
    db = tmp_path / "ray.sqlite3"
    first = search_subspaces(SPEC, TINY, Budget(max_states=400), executor="ray", cache=db)
    assert first.info["finished_parts"] == SUBSPACES and not first.cache_hit
    again = search_subspaces(SPEC, TINY, Budget(max_states=400), cache=db)
    assert again.cache_hit
    _same(again, first)


@pytest.mark.slow  # about 25 s: two optimize runs, one starting its own Ray instance
def test_optimize_with_the_ray_executor(tmp_path):
    """The CLI starts its own local Ray instance (and stops it): same best graph and the
    same cached result as local processes, and nothing but the JSON report on stdout."""
    spec = _export(tmp_path)

    def run(*extra: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
        args = ["optimize", str(spec), "--config", "mlp", "--max-states", "800", "--json", *extra]
        p = subprocess.run([sys.executable, "-m", "mirage_py", *args], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout), p

    ray_report, _ = run(
        "-o", str(tmp_path / "r"), "--cache", str(tmp_path / "r.db"), "--executor", "ray", "--jobs", "2"
    )
    local_report, _ = run("-o", str(tmp_path / "l"), "--cache", str(tmp_path / "l.db"), "--jobs", "2")
    assert ray_report["search"]["executor"] == "ray" and local_report["search"]["executor"] == "local"
    assert ray_report["best"]["hash"] == local_report["best"]["hash"]
    for k in ("states", "stop_reason", "candidates", "parts", "cache_key"):
        assert ray_report["search"][k] == local_report["search"][k], k
    entries = []
    for db in ("r.db", "l.db"):
        with ResultCache(tmp_path / db) as c:
            e = c.lookup(ray_report["search"]["cache_key"])
        assert e is not None
        entries.append(e.result)
    _same(*entries)


def _export(tmp_path: Path) -> Path:
    out = tmp_path / "rmsnorm.json"
    p = subprocess.run(
        [sys.executable, "-m", "mirage_py", "benchmarks", "export", "rmsnorm", "--size", "small", "--spec", str(out)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    return out
