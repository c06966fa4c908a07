"""Checkpoint and resume: a search records each finished sub-space in the cache database;
after Ctrl-C (SIGINT) or a kill (SIGKILL), `--resume` reads them back instead of searching
them again, and the final result equals an uninterrupted run's. State budgets only."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from clitools import default_sigint
from test_cache import SPEC, TINY  # tests/ is on sys.path (pytest's rootdir-relative import)

from mirage_py.search.cache import ResultCache
from mirage_py.search.enumerate import Budget
from mirage_py.search.executors import SUBSPACES, search_subspaces

# 600 states per sub-space: about a second each here (measured 0.8-1.6 s), ample time to
# interrupt the second one once the first is recorded (the test polls every 20 ms).
STATES = str(600 * SUBSPACES)


def _recorded(db: Path) -> int:
    """Finished sub-spaces in the database (0 before it exists), read as another process."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
            return int(c.execute("SELECT count(*) FROM parts").fetchone()[0])
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0


def _entry(db: Path, key: str) -> tuple[list[tuple[str, float]], list[str], int, str]:
    with ResultCache(db) as c:
        e = c.lookup(key)
    assert e is not None
    r = e.result
    return [(c.hash, c.cost) for c in r.candidates], r.matched, r.stats.states, r.stats.stop_reason


# ---------------------------------------------------------------------------------------
# In process: an interruption at a known point (deterministic)


def _stop_after(db: Path, n: int):
    """A progress hook that acts as Ctrl-C once `n` sub-spaces are recorded: the hook runs
    as each sub-space starts, so the search stops at the start of sub-space n."""

    def hook(states: int) -> None:
        if _recorded(db) >= n:
            raise KeyboardInterrupt

    return hook


def test_resume_reads_back_the_finished_subspaces(tmp_path):
    want = search_subspaces(SPEC, TINY, Budget(max_states=800), cache=tmp_path / "ref.sqlite3")
    db = tmp_path / "c.sqlite3"
    cut = search_subspaces(SPEC, TINY, Budget(max_states=800), cache=db, on_states=_stop_after(db, 2))
    assert cut.stats.stop_reason == "interrupted" and cut.info["finished_parts"] == 2
    with ResultCache(db) as c:
        assert c.lookup(want.info["cache_key"]) is None  # an interrupted search is no result
        assert c.count_parts() == 2
    # Without --resume a run starts afresh; with it, the two finished sub-spaces are read back.
    again = search_subspaces(SPEC, TINY, Budget(max_states=800), cache=tmp_path / "c2.sqlite3")
    assert again.info["reused_parts"] == 0
    resumed = search_subspaces(SPEC, TINY, Budget(max_states=800), cache=db, resume=True)
    assert resumed.info["reused_parts"] == 2 and not resumed.cache_hit
    for r in (again, resumed):
        assert [(c.hash, c.cost) for c in r.candidates] == [(c.hash, c.cost) for c in want.candidates]
        assert r.matched == want.matched
        assert r.stats.states == want.stats.states and r.stats.stop_reason == want.stats.stop_reason
    # Resuming with a larger budget reads back only the exhausted sub-spaces: a sub-space
    # that stopped on its share of 800 states is searched again with its share of 1600.
    with ResultCache(db) as c:
        stored = c.load_parts(want.info["cache_key"], SUBSPACES)
    exhausted = sum(r.stats.stop_reason == "exhausted" for _, r in stored.values())
    assert len(stored) == SUBSPACES and 0 < exhausted < SUBSPACES
    more = search_subspaces(SPEC, TINY, Budget(max_states=1600), cache=db, resume=True)
    assert not more.cache_hit and more.info["reused_parts"] == exhausted
    assert more.stats.states > want.stats.states


# ---------------------------------------------------------------------------------------
# A real process, a real signal


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mirage_py", *args]


def _optimize(spec: Path, out: Path, db: Path, *extra: str) -> list[str]:
    return _cli("optimize", str(spec), "-o", str(out), "--config", "mlp", "--max-states", STATES, "--cache", str(db),
                "--json", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Any]:
    """The benchmark spec exported by the CLI, and one uninterrupted run of it."""
    tmp = tmp_path_factory.mktemp("resume")
    spec = tmp / "rmsnorm.json"
    exported = subprocess.run(
        _cli("benchmarks", "export", "rmsnorm", "--size", "small", "--spec", str(spec)), capture_output=True, text=True
    )
    assert exported.returncode == 0, exported.stderr
    db = tmp / "ref.sqlite3"
    p = subprocess.run(_optimize(spec, tmp / "out", db), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["search"]["stop_reason"] == "states" and report["search"]["parts"] == SUBSPACES
    return spec, report, _entry(db, report["search"]["cache_key"])


def _interrupt(cmd: list[str], db: Path, sig: int) -> subprocess.CompletedProcess[str]:
    """Start `cmd`, wait until its first sub-space is recorded, send `sig`."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while _recorded(db) < 1:
        assert p.poll() is None, "the search ended before a sub-space was recorded"
        assert time.monotonic() < deadline, "no sub-space recorded in 300 s"
        time.sleep(0.02)
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_resume_after_a_signal_equals_an_uninterrupted_run(reference, tmp_path, sig):
    spec, want, want_entry = reference
    db, out = tmp_path / "c.sqlite3", tmp_path / "out"
    cut = _interrupt(_optimize(spec, out, db), db, sig)
    recorded = _recorded(db)
    assert 1 <= recorded < SUBSPACES, "interrupt the search before its last sub-space"
    if sig == signal.SIGINT:  # it stops cleanly: OUT holds the best so far, and a hint
        assert cut.returncode == 0, cut.stderr
        assert json.loads(cut.stdout)["search"]["stop_reason"] == "interrupted"
        assert (out / "mugraph.json").exists()
        assert "--resume" in cut.stderr
    else:
        assert cut.returncode == -signal.SIGKILL and not out.exists()
    with ResultCache(db) as c:
        assert not c.summaries()  # no result stored for an interrupted search

    p = subprocess.run(_optimize(spec, out, db, "--resume"), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["search"]["reused_parts"] == recorded and f"resumed: {recorded} of {SUBSPACES}" in p.stderr
    assert got["best"]["hash"] == want["best"]["hash"]
    assert got["search"]["states"] == want["search"]["states"]
    assert _entry(db, got["search"]["cache_key"]) == want_entry  # candidates, matches, states, stop


@pytest.mark.slow
def test_resume_after_ctrl_c_of_two_worker_processes(reference, tmp_path):
    """Two local processes, interrupted (the parent passes SIGINT on to its workers), then
    resumed on one process: the same result as the uninterrupted single-process run,
    since the sub-spaces do not depend on --jobs once the cache is on."""
    spec, want, want_entry = reference
    db, out = tmp_path / "c.sqlite3", tmp_path / "out"
    cut = _interrupt(_optimize(spec, out, db, "--jobs", "2"), db, signal.SIGINT)
    assert cut.returncode == 0, cut.stderr
    assert json.loads(cut.stdout)["search"]["stop_reason"] == "interrupted"
    recorded = _recorded(db)
    assert 1 <= recorded < SUBSPACES
    p = subprocess.run(_optimize(spec, out, db, "--resume"), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["search"]["reused_parts"] == recorded
    assert got["best"]["hash"] == want["best"]["hash"]
    assert _entry(db, got["search"]["cache_key"]) == want_entry
