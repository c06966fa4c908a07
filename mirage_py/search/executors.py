"""Running a search as disjoint sub-spaces: in this process, in local worker processes, or
as Ray tasks; with the result cache and per-sub-space checkpoints (cache.py).

A sub-space is the share `k` of `P` of the search's top-level choices (dealt round robin,
see `Searcher(subspace=...)`); it gets the state budget's P-th share. The P results are
merged by hash in sub-space order, so the merged result depends on P and the budget but not
on which executor ran the parts, in what order, or whether some were read back from
checkpoints. Whenever the cache is on (or Ray runs the parts) P is at least SUBSPACES, so
that a search on one process also has units to checkpoint, and a cached result is the
same whatever --jobs or --executor computed it.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Protocol

from ..ir.errors import InputError
from ..ir.graph import KernelGraph
from ..verify import equivalent
from .cache import CacheError, ResultCache, cache_key, covers
from .config import SearchConfig
from .cost import simple_cost_us
from .enumerate import Budget, Candidate, Searcher, SearchResult, SearchStats
from .evaluate import FFEvaluator

log = logging.getLogger(__name__)

# Sub-spaces of a checkpointed (or Ray) search run on one process. Each sub-space builds its
# own oracle and dedup table and verifies its own improving matches, so more parts cost
# more; 4 kept the best result of 400- to 1500-state searches of the small rmsnorm,
# gated_mlp, qknorm and ntrans benchmarks unchanged (8 lost rmsnorm's at 400 states).
SUBSPACES = 4
EXECUTORS = ("local", "ray")

StatesHook = Callable[[int], None]
CostFn = Callable[[KernelGraph], float]


@dataclass(frozen=True)
class PartTask:
    """One sub-space: what a worker needs to search it (picklable)."""

    spec: KernelGraph
    config: SearchConfig
    budget: Budget  # this part's nominal budget: its share of the states, the whole time limit
    seed: int
    part: int
    parts: int
    cost: CostFn = simple_cost_us  # a module-level function (pickled by name)


@dataclass
class SearchRun(SearchResult):
    """A search result with how it was obtained."""

    cache_hit: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # parts, reused_parts, executor, cache_key


def _verifier(spec: KernelGraph, cand: KernelGraph) -> bool:
    return equivalent(spec, cand).equivalent


def search_part(task: PartTask, progress: Callable[[SearchStats], None] | None = None) -> SearchResult:
    """Search one sub-space (the function every executor runs)."""
    searcher = Searcher(
        task.spec,
        task.config,
        FFEvaluator(seed=task.seed),
        _verifier,
        task.cost,
        task.budget,
        subspace=(task.part, task.parts),
        progress=progress,
    )
    return searcher.run()


def part_budget(b: Budget, parts: int) -> Budget:
    states = None if b.max_states is None else max(1, b.max_states // parts)
    return Budget(states, b.time_limit)


def subspace_count(jobs: int, checkpointed: bool) -> int:
    return max(SUBSPACES, jobs) if checkpointed else max(1, jobs)


def _with_time(task: PartTask, seconds: float | None) -> PartTask:
    if seconds is None:
        return task
    return dataclasses.replace(task, budget=Budget(task.budget.max_states, max(seconds, 0.001)))


def _interrupted() -> SearchResult:
    """The result of a part stopped before it searched anything."""
    return SearchResult([], SearchStats(stop_reason="interrupted"))


def merge_results(parts: Sequence[SearchResult]) -> SearchResult:
    found: dict[str, Candidate] = {}
    matched: set[str] = set()
    stats = SearchStats()
    reasons = []
    for r in parts:
        for c in r.candidates:
            found.setdefault(c.hash, c)
        matched.update(r.matched)
        s = r.stats
        stats.states += s.states
        stats.passes += s.passes
        stats.pruned.update(s.pruned)
        stats.oracle_lookups += s.oracle_lookups
        stats.fingerprints += s.fingerprints
        stats.matches += s.matches
        stats.verified += s.verified
        stats.rejected += s.rejected
        stats.seconds = max(stats.seconds, s.seconds)
        for attr in ("time_to_first", "time_to_best"):
            v = getattr(s, attr)
            if v is not None and (getattr(stats, attr) is None or v < getattr(stats, attr)):
                setattr(stats, attr, v)
        reasons.append(s.stop_reason)
    # The run stopped for the most pressing reason any part did.
    for reason in ("interrupted", "time", "states", "exhausted"):
        if reason in reasons:
            stats.stop_reason = reason
            break
    ranked = sorted(found.values(), key=lambda c: (c.cost, c.kernels, c.hash))
    return SearchResult(ranked, stats, sorted(matched))


# ---------------------------------------------------------------------------------------
# Executors. `run` searches the tasks, calls `on_done(task, result)` as each one ends
# (an interrupted part's result says so), reports the running state count to `on_states`,
# and on Ctrl-C stops starting parts and returns; parts it never ran get no `on_done`.

DoneHook = Callable[[PartTask, SearchResult], None]


class Executor(Protocol):
    name: str

    def run(self, tasks: Sequence[PartTask], on_done: DoneHook, on_states: StatesHook) -> None: ...


class SerialExecutor:
    """The parts one after another in this process. A time limit is shared out as the
    parts go: each part gets an equal share of what is left."""

    name = "local"

    def run(self, tasks: Sequence[PartTask], on_done: DoneHook, on_states: StatesHook) -> None:
        t0, base = time.monotonic(), 0
        for k, task in enumerate(tasks):
            limit = task.budget.time_limit
            share = None if limit is None else (limit - (time.monotonic() - t0)) / (len(tasks) - k)

            def progress(s: SearchStats, base: int = base) -> None:
                on_states(base + s.states)

            start = time.monotonic() - t0
            try:
                r = search_part(_with_time(task, share), progress)
            except KeyboardInterrupt:  # between parts, or while one was being set up
                r = _interrupted()
            _shift_times(r, start)
            on_done(task, r)
            if r.stats.stop_reason == "interrupted":
                return
            base += r.stats.states


def _shift_times(r: SearchResult, offset: float) -> None:
    """Times of a part that started `offset` seconds into the run, made run-relative."""
    for c in r.candidates:
        c.found_at = round(c.found_at + offset, 3)
    for attr in ("time_to_first", "time_to_best"):
        v = getattr(r.stats, attr)
        if v is not None:
            setattr(r.stats, attr, round(v + offset, 3))


# Worker-process state, set by the pool initializer.
_COUNTER: Any = None
_STOP: Any = None


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    # One interrupt per part: a Ctrl-C reaches the worker from the terminal's process group
    # and again from the parent, and a second KeyboardInterrupt could land while the
    # searcher is packing up its best-so-far.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _init_worker(counter: Any, stop: Any) -> None:
    global _COUNTER, _STOP
    _COUNTER, _STOP = counter, stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an idle worker has nothing to stop


def _pool_task(task: PartTask) -> tuple[int, SearchResult]:
    last = [0]

    def progress(s: SearchStats) -> None:
        with _COUNTER.get_lock():
            _COUNTER.value += s.states - last[0]
        last[0] = s.states

    signal.signal(signal.SIGINT, _on_sigint)
    try:
        r = _interrupted() if _STOP.is_set() else search_part(task, progress)
    except KeyboardInterrupt:
        r = _interrupted()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return task.part, r


class ProcessExecutor:
    """The parts on `jobs` local worker processes (spawned, not forked: the parent may hold
    egglog's and z3's native threads, and a forked child of a threaded process can
    deadlock). Ctrl-C stops the running parts (each returns its best so far) and skips
    the rest."""

    name = "local"

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def run(self, tasks: Sequence[PartTask], on_done: DoneHook, on_states: StatesHook) -> None:
        if not tasks:
            return
        workers = min(self.jobs, len(tasks))
        share = None if tasks[0].budget.time_limit is None else tasks[0].budget.time_limit * workers / len(tasks)
        by_part = {t.part: t for t in tasks}
        ctx = mp.get_context("spawn")
        counter, stop = ctx.Value("q", 0), ctx.Event()
        with ctx.Pool(workers, initializer=_init_worker, initargs=(counter, stop)) as pool:
            results = pool.imap_unordered(_pool_task, [_with_time(t, share) for t in tasks])
            left = len(tasks)
            while left:
                try:
                    part, r = results.next(timeout=0.5)
                except mp.TimeoutError:
                    on_states(counter.value)
                    continue
                except KeyboardInterrupt:
                    if not stop.is_set():
                        stop.set()
                        _forward_sigint(pool)
                    continue  # the running parts return their best so far
                left -= 1
                on_done(by_part[part], r)
                on_states(counter.value)


def _forward_sigint(pool: Any) -> None:
    """Pass a Ctrl-C on to the workers (a `kill -INT` of the parent alone reaches only it)."""
    for proc in getattr(pool, "_pool", []):
        try:
            os.kill(proc.pid, signal.SIGINT)
        except (OSError, TypeError):
            pass


def import_ray() -> ModuleType:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise InputError(
            "--executor ray needs Ray: install mirage-py[cluster] (pip install 'mirage-py[cluster]')"
        ) from None


class RayExecutor:
    """The parts as Ray tasks, on the cluster at `address`, or on a local Ray instance
    (started here and shut down after, unless Ray is already initialized). The driver
    records checkpoints, so workers need no access to the cache file. A time limit is
    shared out as if the cluster's CPUs ran the parts in waves."""

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int = 1) -> None:
        self.address, self.jobs = address, jobs

    def run(self, tasks: Sequence[PartTask], on_done: DoneHook, on_states: StatesHook) -> None:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            self._init(ray)
        try:
            self._run(ray, tasks, on_done, on_states)
        finally:
            if started:
                ray.shutdown()

    def _init(self, ray: ModuleType) -> None:
        kw: dict[str, Any] = {"log_to_driver": False}  # --json keeps stdout to itself
        if self.address is None:
            # A local instance: our objects are a few kB, so a small object store will do.
            kw.update(include_dashboard=False, object_store_memory=256 << 20)
            if self.jobs > 1:
                kw["num_cpus"] = self.jobs
        if self.address is not None:
            _check_reachable(self.address)
        try:
            ray.init(address=self.address, **kw)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise InputError(f"cannot start or reach Ray at {self.address or 'a local instance'}: {e}") from None

    def _run(self, ray: ModuleType, tasks: Sequence[PartTask], on_done: DoneHook, on_states: StatesHook) -> None:
        if not tasks:
            return
        limit = tasks[0].budget.time_limit
        if limit is not None:
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            tasks = [_with_time(t, limit * min(cpus, len(tasks)) / len(tasks)) for t in tasks]
        remote = ray.remote(num_cpus=1, max_retries=0)(search_part)
        refs = {remote.remote(t): t for t in tasks}
        pending, states = list(refs), 0
        while pending:
            try:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            except KeyboardInterrupt:
                for ref in pending:
                    ray.cancel(ref)
                return  # the finished parts are recorded; the cancelled ones are lost
            for ref in ready:
                r = ray.get(ref)
                states += r.stats.states
                on_done(refs[ref], r)
                on_states(states)


def _check_reachable(address: str) -> None:
    """A host:port address that does not answer is a one-line error now: Ray itself keeps
    retrying for minutes. Other forms ("auto", "local") are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise InputError(f"cannot reach Ray at {address}: {e.strerror or e}") from None


def make_executor(kind: str, jobs: int = 1, ray_address: str | None = None) -> Executor:
    if kind == "ray":
        return RayExecutor(ray_address, jobs)
    if kind != "local":
        raise InputError(f"unknown executor {kind!r} (known: {', '.join(EXECUTORS)})")
    if ray_address is not None:
        raise InputError("--ray-address needs --executor ray")
    return ProcessExecutor(jobs) if jobs > 1 else SerialExecutor()


# ---------------------------------------------------------------------------------------
# The search as a whole: cache lookup, sub-spaces (some read back from checkpoints), merge.


def open_cache(path: str | Path | None) -> ResultCache | None:
    """The cache at `path`; None (after a warning) if the file cannot serve as one: a bad
    cache must not stop the search."""
    if path is None:
        return None
    try:
        return ResultCache(path)
    except CacheError as e:
        log.warning("mirage-py: warning: cache disabled for this run: %s", e)
        return None


def _reverified(spec: KernelGraph, r: SearchResult, seed: int, key: str) -> bool:
    """A cached winner is proven again (fresh trials) before it is trusted."""
    if r.best is None or equivalent(spec, r.best.graph, seed=seed + 2000).equivalent:
        return True
    log.warning("mirage-py: warning: cache entry %s ignored: its winner failed re-verification", key[:12])
    return False


def search_subspaces(
    spec: KernelGraph,
    cfg: SearchConfig,
    budget: Budget,
    *,
    cost: CostFn = simple_cost_us,
    seed: int = 0,
    jobs: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    on_states: StatesHook | None = None,
) -> SearchRun:
    """The search with the cache at `cache` (None: none). A stored result whose budget is
    no smaller is a hit (its winner re-verified, no search). Otherwise the sub-spaces run
    on the executor and each finished one is recorded as it ends; with `resume`, recorded
    sub-spaces of the same split and budget are read back instead of searched again, and
    exhausted ones are read back for any budget (a larger budget resumes the last run).
    An interrupted search is not stored as a result: its finished sub-spaces are."""
    ex = make_executor(executor, jobs, ray_address)
    db = open_cache(cache)
    parts = subspace_count(jobs, db is not None or ex.name == "ray")
    key = cache_key(spec, cfg, seed, cost)
    info: dict[str, Any] = {"parts": parts, "reused_parts": 0, "executor": ex.name, "cache_key": key if db else None}
    try:
        entry = db.lookup(key) if db else None
        if db and entry and covers(entry.budget, entry.result.stats.stop_reason, budget):
            if _reverified(spec, entry.result, seed, key):
                r = entry.result
                return SearchRun(r.candidates, r.stats, r.matched, cache_hit=True, info={**info, "parts": entry.parts})
        tasks = [PartTask(spec, cfg, part_budget(budget, parts), seed, k, parts, cost) for k in range(parts)]
        results: dict[int, SearchResult] = {}
        if db and (resume or entry is not None):
            for k, (b, r) in db.load_parts(key, parts).items():
                if r.stats.stop_reason == "exhausted" or (resume and b == tasks[k].budget):
                    results[k] = r
        info["reused_parts"] = len(results)
        base = sum(r.stats.states for r in results.values())

        def on_done(task: PartTask, r: SearchResult) -> None:
            results[task.part] = r
            if db and r.stats.stop_reason != "interrupted":
                db.record_part(key, parts, task.part, task.budget, r)

        def states(n: int) -> None:
            if on_states:
                on_states(base + n)

        t0 = time.monotonic()
        try:
            ex.run([t for t in tasks if t.part not in results], on_done, states)
        except KeyboardInterrupt:
            pass  # what finished is recorded; the merge below says "interrupted"
        merged = merge_results([results[k] for k in sorted(results)])
        merged.stats.seconds = time.monotonic() - t0  # wall time of this run (read-back parts cost none)
        if merged.candidates:  # the merge took the earliest part's times; the best's is the one
            merged.stats.time_to_best = merged.candidates[0].found_at
            merged.stats.time_to_first = min(c.found_at for c in merged.candidates)
        if len(results) < parts:
            merged.stats.stop_reason = "interrupted"
        elif db and merged.stats.stop_reason != "interrupted":
            db.store(key, spec, cfg, seed, budget, parts, merged)
        info["finished_parts"] = sum(r.stats.stop_reason != "interrupted" for r in results.values())
        return SearchRun(merged.candidates, merged.stats, merged.matched, info=info)
    finally:
        if db:
            db.close()
