"""The search-result cache and its checkpoints, in one embedded SQLite database.

Two tables. `results` holds one finished search per key; `parts` holds the finished
sub-spaces of a search (its checkpoints), recorded as each one finishes, so an interrupted
search can resume without redoing them. The key is a digest of everything a result depends
on: the spec's canonical hash, the search config, the seed, the schema versions and the tool
version. The budget is not in the key: an entry stores its budget and stop reason, and a
request whose budget is no larger is a hit (DESIGN.md, "Command-line contract").

Several processes (and Ray drivers) may share one file: the database runs in WAL mode, every
write is one `BEGIN IMMEDIATE` transaction, and a busy timeout makes writers wait for each
other; there are no hand-made locks. WAL needs a local file system (not NFS).

Every stored payload carries a sha256 checksum and names its schema and key. An entry that
fails any check (checksum, schema, key, unparsable JSON, a graph that does not load or does
not hash to its recorded hash) is reported as a warning and ignored, never loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..ir.canonical import graph_hash
from ..ir.errors import GraphError, SchemaError
from ..ir.graph import KernelGraph
from ..ir.serialize import SCHEMA as GRAPH_SCHEMA
from ..ir.serialize import from_dict, to_dict
from .config import SearchConfig
from .enumerate import Budget, Candidate, SearchResult, SearchStats

log = logging.getLogger(__name__)

ENTRY_SCHEMA = "mirage-py.cache-entry.v1"
# SQLite header fields: `application_id` marks the file as ours (a foreign SQLite file is
# never written to), `user_version` is the table layout.
APPLICATION_ID = 0x4D697261  # "Mira"
DB_VERSION = 1
BUSY_TIMEOUT_S = 60.0

_TABLES = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    spec_hash TEXT NOT NULL,
    config_name TEXT NOT NULL,
    stop_reason TEXT NOT NULL,
    states INTEGER NOT NULL,
    best_cost REAL,
    created REAL NOT NULL,
    payload TEXT NOT NULL,
    checksum TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    key TEXT NOT NULL,
    parts INTEGER NOT NULL,
    part INTEGER NOT NULL,
    stop_reason TEXT NOT NULL,
    created REAL NOT NULL,
    payload TEXT NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY (key, parts, part)
);
"""


class CacheError(Exception):
    """The file cannot serve as a cache (not SQLite, another program's, another layout)."""


class BadEntry(Exception):
    """A stored entry that must not be loaded; the message says why."""


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/mirage-py/cache.sqlite3, or ~/.cache/mirage-py/cache.sqlite3."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mirage-py" / "cache.sqlite3"


def cache_key(spec: KernelGraph, cfg: SearchConfig, seed: int, cost: Callable[..., float] | None = None) -> str:
    """The digest of everything a search result depends on, the budget excepted. The seed
    is in it (fingerprints, and so which states dedup merges, depend on it), and so is the
    cost model by name (the search verifies only matches cheaper than its best)."""
    fields = {
        "cost": None if cost is None else f"{cost.__module__}.{cost.__qualname__}",
        "spec": graph_hash(spec),
        "config": json.loads(cfg.to_json()),
        "seed": seed,
        "graph_schema": GRAPH_SCHEMA,
        "entry_schema": ENTRY_SCHEMA,
        "tool": __version__,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# Budgets


def budget_json(b: Budget) -> dict[str, Any]:
    return {"max_states": b.max_states, "time_limit": b.time_limit}


def covers(stored: Budget, stop_reason: str, wanted: Budget) -> bool:
    """Whether a result stored with `stored` (stopped for `stop_reason`) answers a request
    for `wanted`: an exhausted search answers any budget; otherwise each limit wanted must
    be no larger than the stored one (None is no limit)."""
    if stop_reason == "exhausted":
        return True

    def no_larger(w: float | None, s: float | None) -> bool:
        return s is None or (w is not None and w <= s)

    return no_larger(wanted.max_states, stored.max_states) and no_larger(wanted.time_limit, stored.time_limit)


# ---------------------------------------------------------------------------------------
# Results as JSON


def result_to_json(r: SearchResult) -> dict[str, Any]:
    stats = dataclasses.asdict(r.stats)
    stats["pruned"] = dict(sorted(r.stats.pruned.items()))
    return {
        "candidates": [
            {
                "hash": c.hash,
                "kernels": c.kernels,
                "cost": c.cost,
                "found_at": c.found_at,
                "states": c.states,
                "graph": to_dict(c.graph),
            }
            for c in r.candidates
        ],
        "stats": stats,
        "matched": list(r.matched),
    }


def result_from_json(d: dict[str, Any]) -> SearchResult:
    """Rebuild a result; raises BadEntry if anything is off (a graph is loaded through the
    IR's validation and must hash to the hash recorded beside it)."""
    try:
        cands = []
        for c in d["candidates"]:
            g = from_dict(c["graph"])
            if graph_hash(g) != c["hash"]:
                raise BadEntry(f"candidate {str(c['hash'])[:12]} does not hash to its recorded hash")
            cands.append(Candidate(g, c["hash"], int(c["kernels"]), float(c["cost"]), c["found_at"], int(c["states"])))
        known = {f.name for f in dataclasses.fields(SearchStats)}
        raw = {k: v for k, v in d["stats"].items() if k in known}
        stats = SearchStats(**{**raw, "pruned": Counter(raw.get("pruned", {}))})
        return SearchResult(cands, stats, [str(h) for h in d["matched"]])
    except BadEntry:
        raise
    except (GraphError, SchemaError) as e:
        raise BadEntry(f"a stored graph does not load ({e})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadEntry(f"malformed result ({type(e).__name__}: {e})") from None


def _checksum(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()


def _decode(key: str, payload: str, checksum: str) -> dict[str, Any]:
    """The payload as a dict, after every check that does not need the graphs."""
    if _checksum(payload) != checksum:
        raise BadEntry("checksum mismatch (corrupt)")
    try:
        d = json.loads(payload)
    except ValueError:
        raise BadEntry("unparsable JSON") from None
    if not isinstance(d, dict) or d.get("schema") != ENTRY_SCHEMA:
        schema = d.get("schema") if isinstance(d, dict) else None
        raise BadEntry(f"foreign entry (schema {schema!r}, this version reads {ENTRY_SCHEMA!r})")
    if d.get("key") != key:
        raise BadEntry("foreign entry (its payload names another key)")
    return d


def _warn(what: str, key: str, why: str) -> None:
    log.warning("mirage-py: warning: %s %s ignored: %s", what, key[:12], why)


# ---------------------------------------------------------------------------------------
# The database


@dataclass
class Entry:
    """A stored search result with what it was computed under."""

    key: str
    budget: Budget
    parts: int
    result: SearchResult
    meta: dict[str, Any]  # spec hash, config, seed, versions, created


@dataclass
class Summary:
    key: str
    spec_hash: str
    config_name: str
    stop_reason: str
    states: int
    best_cost: float | None
    created: float
    ok: bool  # the checksum holds (the graphs are only checked on load)


class ResultCache:
    """One cache database. Safe to share between processes; not between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise CacheError(f"cannot open cache {self.path}: {e}") from None
        try:
            self._init()
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise CacheError(f"{self.path} is not a usable cache database ({e})") from None
        except CacheError:
            self.conn.close()
            raise

    def _init(self) -> None:
        c = self.conn
        c.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        app = c.execute("PRAGMA application_id").fetchone()[0]
        if app == APPLICATION_ID:
            self._check_version()
            c.execute("PRAGMA journal_mode = WAL")
            return
        with self._write():
            app = c.execute("PRAGMA application_id").fetchone()[0]  # another process may have won
            tables = c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app != APPLICATION_ID:
                if app != 0 or tables:
                    raise CacheError(f"{self.path} is another program's SQLite database, not a mirage-py cache")
                for stmt in _TABLES.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                c.execute(f"PRAGMA user_version = {DB_VERSION}")
        self._check_version()
        c.execute("PRAGMA journal_mode = WAL")

    def _check_version(self) -> None:
        v = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if v != DB_VERSION:
            raise CacheError(f"{self.path} has cache layout {v}; this version uses {DB_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. IMMEDIATE takes the write lock up front, so two writers
        queue on the busy timeout instead of failing on a lock upgrade."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- whole results -----------------------------------------------------------------
    def store(
        self, key: str, spec: KernelGraph, cfg: SearchConfig, seed: int, budget: Budget, parts: int, r: SearchResult
    ) -> None:
        created = time.time()
        payload = json.dumps(
            {
                "schema": ENTRY_SCHEMA,
                "key": key,
                "tool": __version__,
                "graph_schema": GRAPH_SCHEMA,
                "spec_hash": graph_hash(spec),
                "config": json.loads(cfg.to_json()),
                "seed": seed,
                "budget": budget_json(budget),
                "parts": parts,
                "created": created,
                "result": result_to_json(r),
            },
            sort_keys=True,
        )
        best = r.best.cost if r.best else None
        row = (key, graph_hash(spec), cfg.preset, r.stats.stop_reason, r.stats.states, best, created)
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, payload, _checksum(payload)),
            )

    def lookup(self, key: str) -> Entry | None:
        """The entry for `key`, or None (also for a bad entry, after a warning)."""
        row = self.conn.execute("SELECT payload, checksum FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            d = _decode(key, *row)
            b = d["budget"]
            meta = {k: d.get(k) for k in ("spec_hash", "config", "seed", "tool", "graph_schema", "created")}
            return Entry(
                key, Budget(b["max_states"], b["time_limit"]), int(d["parts"]), result_from_json(d["result"]), meta
            )
        except BadEntry as e:
            _warn("cache entry", key, str(e))
        except (KeyError, TypeError, ValueError) as e:
            _warn("cache entry", key, f"malformed entry ({type(e).__name__}: {e})")
        return None

    # -- sub-space checkpoints ------------------------------------------------------------
    def record_part(self, key: str, parts: int, part: int, budget: Budget, r: SearchResult) -> None:
        payload = json.dumps(
            {
                "schema": ENTRY_SCHEMA,
                "key": key,
                "parts": parts,
                "part": part,
                "budget": budget_json(budget),
                "result": result_to_json(r),
            },
            sort_keys=True,
        )
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, parts, part, r.stats.stop_reason, time.time(), payload, _checksum(payload)),
            )

    def load_parts(self, key: str, parts: int) -> dict[int, tuple[Budget, SearchResult]]:
        """The recorded sub-spaces of `key` split `parts` ways: part -> (its budget, result).
        Bad records are reported and left out."""
        out: dict[int, tuple[Budget, SearchResult]] = {}
        rows = self.conn.execute(
            "SELECT part, payload, checksum FROM parts WHERE key = ? AND parts = ? ORDER BY part", (key, parts)
        ).fetchall()
        for part, payload, checksum in rows:
            try:
                d = _decode(key, payload, checksum)
                if d.get("parts") != parts or d.get("part") != part:
                    raise BadEntry("foreign entry (its payload names another sub-space)")
                b = d["budget"]
                out[part] = (Budget(b["max_states"], b["time_limit"]), result_from_json(d["result"]))
            except BadEntry as e:
                _warn(f"checkpoint {part}/{parts} of", key, str(e))
            except (KeyError, TypeError, ValueError) as e:
                _warn(f"checkpoint {part}/{parts} of", key, f"malformed ({type(e).__name__}: {e})")
        return out

    def count_parts(self, key: str | None = None) -> int:
        if key is None:
            return int(self.conn.execute("SELECT count(*) FROM parts").fetchone()[0])
        return int(self.conn.execute("SELECT count(*) FROM parts WHERE key = ?", (key,)).fetchone()[0])

    # -- for `mirage-py cache` --------------------------------------------------------------
    def summaries(self) -> list[Summary]:
        rows = self.conn.execute(
            "SELECT key, spec_hash, config_name, stop_reason, states, best_cost, created, payload, checksum "
            "FROM results ORDER BY created DESC"
        ).fetchall()
        return [
            Summary(key, spec, config, stop, states, best, created, _checksum(payload) == checksum)
            for key, spec, config, stop, states, best, created, payload, checksum in rows
        ]

    def find_key(self, prefix: str) -> str:
        """The one stored key starting with `prefix`; KeyError naming the problem otherwise."""
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        keys = [r[0] for r in self.conn.execute("SELECT key FROM results WHERE key LIKE ? ESCAPE '\\'", (like,))]
        if len(keys) != 1:
            raise KeyError(f"no cache entry starts with {prefix!r}" if not keys else f"{prefix!r} is ambiguous")
        return keys[0]

    def raw(self, key: str) -> dict[str, Any]:
        """The stored payload of `key`, checked (BadEntry if it fails a check)."""
        row = self.conn.execute("SELECT payload, checksum FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no cache entry {key!r}")
        d = _decode(key, *row)
        result_from_json(d["result"])  # the graphs load and hash as recorded
        return d

    def clear(self) -> tuple[int, int]:
        """Delete every result and checkpoint; returns how many of each."""
        with self._write() as c:
            n = c.execute("DELETE FROM results").rowcount
            m = c.execute("DELETE FROM parts").rowcount
        return n, m
