"""Depth-first enumeration of multi-level μGraphs (the paper's search, with state dedup).

One mutable state is extended and backtracked (`pop_node`), never copied. At kernel level
a state either matches the spec (every spec output has a tensor with the same fingerprint:
verify and record, stop the branch), opens a customized op, or adds a predefined kernel
op. Inside a customized op it adds block ops or closes the block graph with output omaps.

Pruning, each counted in `stats.pruned`:
  order      canonical order: a new op's (inputs, op, attrs) key must sort after the last
             op's, and commutative ops take sorted inputs, so each graph is built one way;
  shape      shape / tiling / loop-stage rules (a GraphError from the IR);
  absexpr    the op's abstract expression is not a subexpression of the spec's;
  duplicate  the new tensor's fingerprint equals an existing tensor's (it is useless);
  dedup      a state with the same tensors (fingerprints, in order) was already explored
             with a last-op key no larger, i.e. with a superset of continuations: keying on
             fingerprints alone would cut routes that only the smaller key allows;
  resource   shared memory over the target's limit, or a grid/loop choice that replicates
             every input along a grid dim;
  not-better a match no cheaper than the best verified one is not verified (listed only);
  outputs    a block graph cannot close: unused inputs, or per-iteration leftovers;
  fragment   the value leaves the evaluator's domain (nested exp in the finite field);
  lift       a reduced-shape match does not rebuild at full shape (reduce.py).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from typing import Any, Protocol

from ..ir.canonical import canonical, graph_hash
from ..ir.dtypes import ITEMSIZE
from ..ir.errors import GraphError
from ..ir.expr_rules import RULES, Term
from ..ir.graph import BlockGraph, Graph, KernelGraph, Map3, TensorType
from ..ir.ops import ACCUMULATORS, ELEMENTWISE, get_op
from .absexpr import NARROW_AXIOMS, EgglogOracle, spec_terms
from .config import SearchConfig, grid_candidates
from .reduce import Reduction, lift, reduce_spec

COMMUTATIVE = frozenset({"add", "mul"})
_ATTR_OPS = frozenset({"reduce_sum", "mul_scalar", "add_scalar", "rms_norm", "gelu", "concat"})
_NO_ATTRS: list[tuple[dict[str, Any], tuple[Any, ...]]] = [({}, ())]


class Evaluator(Protocol):
    """The value domain fingerprints come from (finite-field residues in practice)."""

    def inputs(self, spec: KernelGraph) -> list[Any]: ...
    def apply(self, g: Graph, node_index: int, args: list[Any], lead: int) -> list[Any]: ...
    def split(self, x: Any, bg: BlockGraph, k: int) -> Any: ...
    def merge(self, y: Any, bg: BlockGraph, k: int) -> Any: ...
    def key(self, v: Any) -> bytes: ...


@dataclass
class Budget:
    max_states: int | None = None
    time_limit: float | None = None


@dataclass
class Candidate:
    graph: KernelGraph
    hash: str
    kernels: int
    cost: float
    found_at: float  # seconds into the search
    states: int


@dataclass
class SearchStats:
    states: int = 0
    pruned: Counter[str] = field(default_factory=Counter)
    oracle_lookups: int = 0
    passes: int = 0  # passes started (narrow axioms, then all; one customized op, then more)
    fingerprints: int = 0
    matches: int = 0
    verified: int = 0
    rejected: int = 0
    seconds: float = 0.0
    time_to_first: float | None = None
    time_to_best: float | None = None
    stop_reason: str = "exhausted"

    def to_json(self) -> dict[str, Any]:
        return {
            "states": self.states,
            "states_per_second": round(self.states / self.seconds, 1) if self.seconds else None,
            "pruned": dict(sorted(self.pruned.items())),
            "oracle_lookups": self.oracle_lookups,
            "passes": self.passes,
            "fingerprints": self.fingerprints,
            "matches": self.matches,
            "verified": self.verified,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "time_to_first": self.time_to_first,
            "time_to_best": self.time_to_best,
            "stop_reason": self.stop_reason,
        }


@dataclass
class SearchResult:
    candidates: list[Candidate]  # verified, best (lowest cost) first
    stats: SearchStats
    matched: list[str] = field(default_factory=list)  # hashes of all matches (sorted)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


class PruneValue(Exception):
    """Raised by an evaluator for a value outside its domain (nested exp in the finite
    field): the op is pruned, never accepted."""


class _PassOver(Exception):
    """A pass used its share of the time limit (Searcher._deadline)."""


class _CapHit(Exception):
    """A top-level action used its round's share of states (Searcher._pass)."""


@dataclass
class _Round:
    """A round of iterative broadening (Searcher._pass)."""

    cap: int  # states per top-level action
    prefix: int  # the round runs top-level actions 0 .. prefix - 1 (this sub-space's own)
    done_below: int  # of those, the earlier rounds ran the ones below this index ...
    retry: set[int]  # ... and cut these short
    capped: set[int] = field(default_factory=set)  # cut short in this round
    more: bool = False  # actions past the prefix exist


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


# A verifier takes (spec, candidate) and says whether the candidate is proven equivalent.
Verifier = Callable[[KernelGraph, KernelGraph], bool]


@dataclass
class _Kernel:
    """The kernel-level state: graph plus per-tensor values, fingerprints and terms."""

    g: KernelGraph
    vals: list[Any]
    keys: list[bytes]
    terms: list[Term]
    last: tuple[Any, ...] | None = None
    customized: int = 0


@dataclass
class _Block:
    bg: BlockGraph
    ins: tuple[int, ...]  # kernel tensor ids feeding the block inputs
    vals: list[Any]
    keys: list[bytes]
    terms: list[Term]
    last: tuple[Any, ...] | None = None


class Searcher:
    def __init__(
        self,
        spec: KernelGraph,
        cfg: SearchConfig,
        evaluator: Evaluator,
        verifier: Verifier,
        cost: Callable[[KernelGraph], float],
        budget: Budget | None = None,
        subspace: tuple[int, int] = (0, 1),
        progress: Callable[[SearchStats], None] | None = None,
        reduce: bool = True,
    ) -> None:
        self.full_spec, self.cfg, self.ev, self.verifier, self.cost = spec, cfg, evaluator, verifier, cost
        # The search runs on reduced shapes; candidates are lifted back (see reduce.py).
        self.reduction = reduce_spec(spec, cfg) if reduce else Reduction(spec, {}, {})
        self.spec = spec = self.reduction.spec
        self.budget = budget or Budget()
        self.subspace = subspace
        self.progress = progress
        self.stats = SearchStats()
        self.spec_terms = spec_terms(spec)
        # Two passes when the narrow axioms prune more: the narrow one finds the usual
        # rewrites fast, the full one then covers reassociated and distributed forms.
        wide, narrow = EgglogOracle(self.spec_terms), EgglogOracle(self.spec_terms, axioms=NARROW_AXIOMS)
        self.oracles = [narrow, wide] if len(narrow) < len(wide) else [wide]
        self.oracle = self.oracles[0]
        self.max_customized = cfg.max_customized
        self._input_vals = evaluator.inputs(spec)
        spec_vals = _run_values(spec, evaluator, self._input_vals)
        self.spec_keys = [evaluator.key(v) for v in spec_vals]
        self.spec_types = [spec.types[o] for o in spec.outputs]
        self.grids = grid_candidates(self.full_spec, cfg)
        self.kernel_ops, self.block_ops = _op_sets(spec, cfg)
        self.constants = _spec_constants(spec)
        self.sizes = sorted({d for t in spec.types for d in t.dims} | {1})
        self.found: dict[str, Candidate] = {}
        self.matched: set[str] = set()  # hashes of every lifted match, verified or not
        self.seen: dict[Any, tuple[Any, ...] | None] = {}
        self._attr_cache: dict[Any, list[tuple[dict[str, Any], tuple[Any, ...]]]] = {}
        self._memo: OrderedDict[Any, tuple[Any, bytes]] = OrderedDict()
        self._memo_bytes = 0
        self._t0 = 0.0
        self._pass_deadline: float | None = None
        # Iterative broadening (_pass): the current round (None: plain depth first) and the
        # state count at which the current top-level action stops.
        self._round: _Round | None = None
        self._cap_at: int | None = None

    # -- driver ------------------------------------------------------------------------
    def run(self) -> SearchResult:
        self._t0 = time.monotonic()
        try:
            if self.progress:
                self.progress(self.stats)  # the search proper starts now
            # Passes of growing scope: the narrow oracle, then the wide one, each first with
            # one customized op, then with up to the config's limit. Depth first, a closed
            # block starts a second customized op whose subtree a time-limited run may never
            # leave; one customized op at a time finds the fused single-kernel graphs first.
            # A state explored in a narrower pass has a larger subtree in a wider one: dedup
            # starts afresh; matches already made are not re-verified. Under a time limit the
            # one-customized-op pass is left out: broadening (_pass) caps every opening, so
            # its rounds reach the single-kernel graphs without it (rmsnorm: 12.6 s), and that
            # pass's time share went to repeating them.
            m = self.cfg.max_customized
            limits = [m] if self.budget.time_limit is not None else sorted({min(1, m), m})
            passes = [(o, limit) for o in self.oracles for limit in limits]
            for k, (oracle, limit) in enumerate(passes):
                self.oracle, self.max_customized = oracle, limit  # _pass resets dedup
                self.stats.passes += 1
                self._pass_deadline = self._deadline(len(passes) - k)
                try:
                    self._pass()
                except _PassOver:
                    pass
        except _Stop as s:
            self.stats.stop_reason = s.reason
        except KeyboardInterrupt:
            self.stats.stop_reason = "interrupted"
        self.stats.seconds = time.monotonic() - self._t0
        ranked = sorted(self.found.values(), key=lambda c: (c.cost, c.kernels, c.hash))
        return SearchResult(ranked, self.stats, sorted(self.matched))

    def _pass(self) -> None:
        """One pass. Without a time limit, plain depth first (the cache's reuse of exhausted
        sub-spaces and the --jobs equality rely on its exact result). With one, iterative
        broadening over growing prefixes: round r runs the first FIRST_ACTIONS * 2^r
        top-level actions (openings of the first kernel, first kernel ops), each for at most
        FIRST_CAP * 2^r states; an action cut short is retried in the next round, one that
        finished is not. Depth first alone spends the whole limit in the first openings'
        subtrees (a third of qknorm's 31 000 openings have more than 64 states), and rounds
        over every opening spent it in the tail: qknorm's first round at 64 states each was
        657 000 states. A round starts with fresh dedup: a state entered in a subtree cut
        short was not fully explored."""
        if self.budget.time_limit is None:
            self.seen, self._round = {}, None
            # A fresh graph each pass: one cut short by _PassOver is left mid-branch.
            self._kernel(self._initial_state(), top=True)
            return
        rnd = _Round(FIRST_CAP, FIRST_ACTIONS, 0, set())
        while True:
            self.seen, self._round = {}, rnd
            self._kernel(self._initial_state(), top=True)
            if not rnd.capped and not rnd.more:
                return
            rnd = _Round(2 * rnd.cap, 2 * rnd.prefix, rnd.prefix, rnd.capped)

    def _initial_state(self) -> _Kernel:
        kg = KernelGraph()
        for tid, name in zip(self.spec.inputs, self.spec.input_names):
            t = self.spec.types[tid]
            kg.new_input(t.dims, t.dtype, name)
        vals = self._input_vals  # drawn once: a paper-size draw is tens of ms, every pass needs it
        return _Kernel(kg, vals, [self.ev.key(v) for v in vals], [("var", n) for n in self.spec.input_names])

    def _deadline(self, passes_left: int) -> float | None:
        """With a time limit, a pass gets its share of the time left (what an earlier pass
        did not use goes to the later ones): depth first, a pass that cannot finish would
        otherwise keep the wider ones (two customized ops: flash decoding) from starting."""
        if self.budget.time_limit is None or passes_left <= 1:
            return None
        now = time.monotonic()
        return now + (self._t0 + self.budget.time_limit - now) / passes_left

    def _tick(self) -> None:
        s = self.stats
        s.states += 1
        if self.budget.max_states is not None and s.states > self.budget.max_states:
            s.states -= 1
            raise _Stop("states")
        if self.budget.time_limit is not None:
            now = time.monotonic()
            if now - self._t0 > self.budget.time_limit:
                raise _Stop("time")
            if self._pass_deadline is not None and now > self._pass_deadline:
                raise _PassOver
        if self._cap_at is not None and s.states > self._cap_at:
            raise _CapHit
        if self.progress and s.states % 256 == 0:
            s.seconds = time.monotonic() - self._t0
            self.progress(s)

    def _contains(self, term: Term) -> bool:
        before = self.oracle.lookups
        ok = self.oracle.contains(term)
        self.stats.oracle_lookups += self.oracle.lookups - before
        return ok

    def _seen_before(self, key: Any, last: tuple[Any, ...] | None) -> bool:
        """Dedup with the canonical order in the key: a state is subsumed by an explored
        one with the same tensors and a last-op key no larger (more continuations)."""
        if self.cfg.dedup == "off":
            return False
        if self.cfg.dedup == "naive":
            seen = key in self.seen
            self.seen[key] = None
            return seen
        if key in self.seen:
            prev = self.seen[key]
            if prev is None or (last is not None and prev <= last):
                return True
            if last is None:
                self.seen[key] = None
                return False
        self.seen[key] = last
        return False

    # -- kernel level --------------------------------------------------------------------
    def _kernel(self, st: _Kernel, top: bool = False) -> None:
        self._tick()
        if self._match(st):
            return
        if len(st.g.nodes) >= self.cfg.max_kernel_ops:
            return
        actions = itertools.chain(self._customized_actions(st), self._kernel_op_actions(st))
        if not top:
            for action in actions:
                action()
            return
        mine = (a for k, a in enumerate(actions) if k % self.subspace[1] == self.subspace[0])
        rnd = self._round
        for j, action in enumerate(mine):
            if rnd is None:
                action()
                continue
            if j >= rnd.prefix:
                rnd.more = True
                return
            if j < rnd.done_below and j not in rnd.retry:
                continue  # finished in an earlier round
            self._cap_at = self.stats.states + rnd.cap
            try:
                action()
            except _CapHit:
                rnd.capped.add(j)
                while st.g.nodes:  # the action was cut mid-branch: back to the bare inputs
                    st.g.pop_node()
            finally:
                self._cap_at = None

    def _kernel_or_dedup(self, sub: _Kernel) -> None:
        """Extend `sub` unless an explored state had the same values. A deduplicated state
        is still matched against the spec: its continuations are the explored state's,
        but it is another graph (another grid, another cost) for the same outputs."""
        if not self._seen_before(("k", tuple(sub.keys), sub.customized), sub.last):
            self._kernel(sub)
        else:
            self.stats.pruned["dedup"] += 1
            self._match(sub)

    def _match(self, st: _Kernel) -> bool:
        chosen: list[int] = []
        for key, t in zip(self.spec_keys, self.spec_types):
            hits = [i for i, k in enumerate(st.keys) if k == key and st.g.types[i] == t]
            if not hits:
                return False
            chosen.append(hits[-1])
        self.stats.matches += 1
        # A tensor that is neither an output nor used is dead code (costs a write, and a
        # kernel or block ops): the same graph without it is in the search space too.
        used = {i for n in st.g.nodes for i in n.inputs} | set(chosen)
        if any(t not in used for n in st.g.nodes for t in n.outputs):
            self.stats.pruned["dead-code"] += 1
        else:
            self._record(st.g, chosen)
        return True

    def _record(self, g: KernelGraph, outs: list[int]) -> None:
        g.outputs, g.output_names = list(outs), list(self.spec.output_names)
        try:
            cand = canonical(g)
        finally:
            g.outputs, g.output_names = [], []
        try:
            cand = canonical(lift(cand, self.full_spec, self.reduction))
        except GraphError:
            self.stats.pruned["lift"] += 1
            return
        if any(_smem_bytes(n.attrs["block_graph"]) > self.cfg.smem_limit for n in cand.nodes if n.op == "customized"):
            self.stats.pruned["resource"] += 1
            return
        h = graph_hash(cand)
        if h in self.matched:
            return
        self.matched.add(h)
        cost = self.cost(cand)
        best = min(self.found.values(), key=lambda x: x.cost, default=None)
        # Verification costs k full-shape trials: spend it only on a candidate that would
        # become the best. Every match is still listed (by hash) in `matched`.
        if best is not None and cost >= best.cost:
            self.stats.pruned["not-better"] += 1
            return
        if not self.verifier(self.full_spec, cand):
            self.stats.rejected += 1
            return
        self.stats.verified += 1
        now = round(time.monotonic() - self._t0, 3)
        self.found[h] = Candidate(cand, h, len(cand.nodes), cost, now, self.stats.states)
        if self.stats.time_to_first is None:
            self.stats.time_to_first = now
        self.stats.time_to_best = now

    def _kernel_op_actions(self, st: _Kernel) -> Iterator[Callable[[], None]]:
        n = len(st.g.types)
        for name in self.kernel_ops:
            op = get_op(name)
            for ins in _inputs_after(n, op.arity, st.last):
                for attrs, akey in self._attr_choices(name, [st.g.types[i] for i in ins]):
                    yield partial(self._add_kernel_op, st, name, ins, attrs, akey)

    def _add_kernel_op(
        self, st: _Kernel, name: str, ins: tuple[int, ...], attrs: dict[str, Any], akey: tuple[Any, ...]
    ) -> None:
        g = st.g
        key = order_key(ins, name, akey)
        made = self._try_op(g, name, ins, attrs, key, st.last, st.terms, st.vals, st.keys, 1, 0)
        if made is None:
            return
        val, fp, term = made
        sub = _Kernel(g, st.vals + [val], st.keys + [fp], st.terms + [term], key, st.customized)
        self._kernel_or_dedup(sub)
        g.pop_node()

    def _try_op(
        self,
        g: Graph,
        name: str,
        ins: tuple[int, ...],
        attrs: dict[str, Any],
        key: tuple[Any, ...],
        last: tuple[Any, ...] | None,
        terms: list[Term],
        vals: list[Any],
        keys: list[bytes],
        forloop_range: int,
        lead: int,
    ) -> tuple[Any, bytes, Term] | None:
        """One candidate op at either level, through every pruning rule in turn (cheapest
        first). On success the op stays added to `g` (the caller pops it after recursing)
        and its value, fingerprint and term are returned; otherwise `g` is unchanged."""
        if (name in COMMUTATIVE and ins[0] > ins[1]) or (last is not None and key <= last):
            self.stats.pruned["order"] += 1
            return None
        # The oracle first (a cached lookup), the shape rules only for what it keeps.
        term = RULES[name]([terms[i] for i in ins], [g.types[i].dims for i in ins], attrs, forloop_range)
        if not self._contains(term):
            self.stats.pruned["absexpr"] += 1
            return None
        try:
            g.add_op(name, list(ins), **attrs)
        except GraphError:
            self.stats.pruned["shape"] += 1
            return None
        reason = self._too_big(g)
        if reason is None:
            try:
                val, fp = self._value(g, key, [vals[i] for i in ins], [keys[i] for i in ins], lead)
                if fp not in keys:
                    return val, fp, term
                reason = "duplicate"
            except PruneValue:
                reason = "fragment"
        g.pop_node()
        self.stats.pruned[reason] += 1
        return None

    def _value(
        self, g: Graph, key: tuple[Any, ...], args: list[Any], arg_keys: list[bytes], lead: int
    ) -> tuple[Any, bytes]:
        """The last op's value and fingerprint, memoized on the op and its inputs'
        fingerprints: depth first, the same tile op (a 64 x 64 matmul over 512 blocks and
        iterations, 20 ms) is rebuilt in every branch that reorders what came before it.
        Equal fingerprints stand for equal values, as dedup already assumes."""
        grid = (g.grid_dims, g.forloop_range) if isinstance(g, BlockGraph) else None
        memo_key = (key[1], key[3], tuple(arg_keys), lead, grid)
        if memo_key in self._memo:
            self._memo.move_to_end(memo_key)
            return self._memo[memo_key]
        val = self.ev.apply(g, len(g.nodes) - 1, args, lead)[0]
        self.stats.fingerprints += 1
        made = val, self.ev.key(val)
        self._memo[memo_key] = made
        self._memo_bytes += _nbytes(val)
        while self._memo_bytes > MEMO_BYTES and len(self._memo) > 1:
            _, (old, _) = self._memo.popitem(last=False)
            self._memo_bytes -= _nbytes(old)
        return made

    def _too_big(self, g: Graph) -> str | None:
        """ "resource" if the last op's value or (block level) shared memory is over limit."""
        if isinstance(g, BlockGraph):
            big = _smem_bytes(g) > self.cfg.smem_limit or _all_blocks_size(g, node_out(g)) > MAX_VALUE_ELEMENTS
        else:
            big = math.prod(g.types[-1].dims) > MAX_VALUE_ELEMENTS
        return "resource" if big else None

    # -- opening a customized op -----------------------------------------------------------
    def _customized_actions(self, st: _Kernel) -> Iterator[Callable[[], None]]:
        if st.customized >= self.max_customized:
            return
        for ins in _customized_inputs(len(st.g.types), st.g.nodes[-1].outputs if st.g.nodes else [], self.block_ops):
            for grid in self.grids:
                for f in self.cfg.forloop_ranges:
                    for maps in self._input_maps(st, ins, grid, f):
                        yield partial(self._open, st, ins, grid, f, maps)

    def _input_maps(self, st: _Kernel, ins: tuple[int, ...], grid: Map3, f: int) -> Iterator[list[tuple[Map3, int]]]:
        per_input = [self._maps_for(st.g.types[i], grid, f) for i in ins]
        for combo in itertools.product(*per_input):
            if f > 1 and all(fd < 0 for _, fd in combo):
                continue  # a loop with nothing to iterate over
            # Mirage's rule: a grid dim > 1 that replicates every input computes the same
            # tiles several times.
            if any(grid[gd] > 1 and all(m[gd] < 0 for m, _ in combo) for gd in range(3)):
                continue
            smem = sum(_tile_bytes(st.g.types[i], m, fd, grid, f) for i, (m, fd) in zip(ins, combo))
            if smem > self.cfg.smem_limit:
                continue
            yield list(combo)

    def _maps_for(self, t: TensorType, grid: Map3, f: int) -> list[tuple[Map3, int]]:
        out = []
        rank = len(t.dims)
        for imap in self.cfg.imaps:
            if any(d >= rank for d in imap):
                continue
            imap = tuple(d if grid[g] > 1 else -1 for g, d in enumerate(imap))  # type: ignore[assignment]
            dims = list(t.dims)
            ok = True
            for g, d in enumerate(imap):
                if d >= 0:
                    ok &= dims[d] % grid[g] == 0
                    dims[d] //= grid[g] if ok else 1
            if not ok:
                continue
            for fd in self.cfg.forloop_dims if f > 1 else (-1,):
                if fd >= rank or (fd >= 0 and dims[fd] % f):
                    continue
                if (imap, fd) not in out:
                    out.append((imap, fd))
        return out

    def _open(self, st: _Kernel, ins: tuple[int, ...], grid: Map3, f: int, maps: list[tuple[Map3, int]]) -> None:
        key = order_key(ins, "customized", (grid, f, tuple(maps)))
        if st.last is not None and key <= st.last:
            self.stats.pruned["order"] += 1
            return
        bg = BlockGraph(grid, f)
        vals, keys = [], []
        for k, (i, (imap, fd)) in enumerate(zip(ins, maps)):
            bg.new_input(st.g.types[i], imap, fd)
            v = self.ev.split(st.vals[i], bg, k)
            vals.append(v)
            keys.append(self.ev.key(v))
        blk = _Block(bg, ins, vals, keys, [st.terms[i] for i in ins])
        self._block(st, blk, key)

    # -- block level ----------------------------------------------------------------------
    def _block(self, st: _Kernel, blk: _Block, open_key: tuple[Any, ...]) -> None:
        self._tick()
        # Deeper fusion first: the block is extended before it is closed, since closing
        # starts a whole kernel-level continuation (a second customized op, with its own
        # block subtrees) that a time-limited run may never return from.
        if len(blk.bg.nodes) < self.cfg.max_block_ops:
            self._extend(st, blk, open_key)
        self._close(st, blk, open_key)

    def _extend(self, st: _Kernel, blk: _Block, open_key: tuple[Any, ...]) -> None:
        n = len(blk.bg.types)
        for name in self.block_ops:
            op = get_op(name)
            for ins in _inputs_after(n, op.arity, blk.last):
                if name == "transpose" and not _transposable(blk.bg, ins[0]):
                    self.stats.pruned["layout"] += 1
                    continue
                for attrs, akey in self._attr_choices(name, [blk.bg.types[i] for i in ins]):
                    self._add_block_op(st, blk, open_key, name, ins, attrs, akey)

    def _add_block_op(
        self,
        st: _Kernel,
        blk: _Block,
        open_key: tuple[Any, ...],
        name: str,
        ins: tuple[int, ...],
        attrs: dict[str, Any],
        akey: tuple[Any, ...],
    ) -> None:
        bg = blk.bg
        key = order_key(ins, name, akey)
        made = self._try_op(bg, name, ins, attrs, key, blk.last, blk.terms, blk.vals, blk.keys, bg.forloop_range, 4)
        if made is None:
            return
        val, fp, term = made
        sub = _Block(bg, blk.ins, blk.vals + [val], blk.keys + [fp], blk.terms + [term], key)
        if not self._seen_before(("b", tuple(st.keys), st.customized, open_key, tuple(sub.keys)), key):
            self._block(st, sub, open_key)
        else:
            self.stats.pruned["dedup"] += 1
        bg.pop_node()

    def _close(self, st: _Kernel, blk: _Block, open_key: tuple[Any, ...]) -> None:
        bg = blk.bg
        used = {i for n in bg.nodes for i in n.inputs}
        if not bg.nodes or any(i not in used for i in bg.inputs):
            return
        leftovers = [t for n in bg.nodes for t in n.outputs if t not in used]
        if len(leftovers) > self.cfg.max_block_outputs or any(bg.stage[t] == "loop" for t in leftovers):
            self.stats.pruned["outputs"] += 1
            return
        omap_sets = [self._omaps_for(bg, t) for t in leftovers]
        for omaps in itertools.product(*omap_sets):
            for t, om in zip(leftovers, omaps):
                bg.new_output(t, om)
            try:
                self._add_customized(st, blk, open_key)
            finally:
                del bg.block_outputs[:], bg.outputs[:]

    def _omaps_for(self, bg: BlockGraph, t: int) -> list[Map3]:
        rank = len(bg.types[t].dims)
        out = []
        for om in self.cfg.omaps:
            if any(d >= rank for d in om):
                continue
            if any((bg.grid_dims[g] > 1) != (om[g] >= 0) for g in range(3)):
                continue  # an omap maps exactly the grid dims > 1
            out.append(om)
        return out

    def _add_customized(self, st: _Kernel, blk: _Block, open_key: tuple[Any, ...]) -> None:
        g, bg = st.g, blk.bg
        try:
            g.customized(list(blk.ins), bg)
        except GraphError:
            self.stats.pruned["shape"] += 1
            return
        if any(math.prod(g.types[o].dims) > MAX_VALUE_ELEMENTS for o in g.nodes[-1].outputs):
            g.pop_node()  # a block's whole tile laid out once per block: not a real kernel
            self.stats.pruned["resource"] += 1
            return
        new_vals = [self.ev.merge(blk.vals[bo.tensor], bg, k) for k, bo in enumerate(bg.block_outputs)]
        new_keys = [self.ev.key(v) for v in new_vals]
        self.stats.fingerprints += len(new_vals)
        if any(k in st.keys for k in new_keys) or len(set(new_keys)) < len(new_keys):
            g.pop_node()
            self.stats.pruned["duplicate"] += 1
            return
        new_terms = [blk.terms[bo.tensor] for bo in bg.block_outputs]
        # Freeze the block graph as it stands: the search goes on mutating `bg`.
        g.nodes[-1].attrs["block_graph"] = _freeze(bg)
        key = order_key(blk.ins, "customized", (*open_key[3], tuple(bo.omap for bo in bg.block_outputs)))
        sub = _Kernel(g, st.vals + new_vals, st.keys + new_keys, st.terms + new_terms, key, st.customized + 1)
        self._kernel_or_dedup(sub)
        g.pop_node()

    # -- attribute candidates ----------------------------------------------------------------
    def _attr_choices(self, name: str, types: Sequence[TensorType]) -> list[tuple[dict[str, Any], tuple[Any, ...]]]:
        """Attribute candidates (already in normal form: non-negative dims, Fractions),
        each with its order key."""
        if name not in _ATTR_OPS:
            return _NO_ATTRS
        key = (name, tuple(t.dims for t in types))
        if key not in self._attr_cache:
            self._attr_cache[key] = self._make_attr_choices(name, types)
        return self._attr_cache[key]

    def _make_attr_choices(
        self, name: str, types: Sequence[TensorType]
    ) -> list[tuple[dict[str, Any], tuple[Any, ...]]]:
        return [(a, _attrs_key(a)) for a in self._attr_dicts(name, types)]

    def _attr_dicts(self, name: str, types: Sequence[TensorType]) -> list[dict[str, Any]]:
        if name == "reduce_sum":
            rank = len(types[0].dims)
            return [
                {"dim": d, "size": s}
                for d in range(rank)
                for s in self.sizes
                if s < types[0].dims[d] and types[0].dims[d] % s == 0
            ]
        if name in ("mul_scalar", "add_scalar"):
            return [{"c": c} for c in self.constants]
        if name == "rms_norm":
            return [{"eps": e} for e in self.constants]
        if name == "gelu":
            return [{"approximate": "none"}, {"approximate": "tanh"}]
        if name == "concat":
            return [{"dim": len(types[0].dims) - 1}]
        return [{}]


def _customized_inputs(n: int, newest: Sequence[int], block_ops: Sequence[str]) -> list[tuple[int, ...]]:
    """Input sets of a customized op over n kernel tensors, promising first: those made of
    the last op's outputs alone (a kernel that consumes what the previous one produced:
    flash decoding's combine after its split-KV kernel), then those with more of them,
    fewer other tensors, more inputs (fusing more of the program is what wins). Depth
    first, the order decides what a time-limited run reaches: the combine's (O_part,
    L_part) came after every 3-input set, each a large subtree re-deriving attention."""
    max_in = 4 if "concat_matmul" in block_ops else 3
    new = set(newest)
    sets = [ins for k in range(1, min(max_in, n) + 1) for ins in itertools.combinations(range(n), k)]

    def rank(ins: tuple[int, ...]) -> tuple[int, int, int]:
        fresh = sum(i in new for i in ins)
        return (fresh < len(ins) if fresh else 2, -fresh, -len(ins))

    return sorted(sets, key=rank)  # stable: lexicographic within a rank


def _transposable(bg: BlockGraph, t: int) -> bool:
    """Worth trying only on a loaded tile (the emitter folds it into the load) or on the
    result of an op whose meaning depends on the layout (rms_norm's rows): transposing an
    elementwise op's or a matmul's result has the term of transposing its operands first
    (expr_rules.transpose), and two transposes cancel."""
    if t in bg.inputs:
        return True
    producer = next(n for n in bg.nodes if t in n.outputs)
    return producer.op not in ELEMENTWISE | {"matmul", "transpose"}


def _inputs_after(n: int, arity: int, last: tuple[Any, ...] | None) -> Iterator[tuple[int, ...]]:
    """Input tuples over n tensors that the canonical order still allows after `last`: the
    newest input must be at least as new as the last op's (see `order_key`)."""
    newest = last[0][0] if last is not None else 0
    for ins in itertools.product(range(n), repeat=arity):
        if max(ins) >= newest:
            yield ins


def _attrs_key(attrs: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in attrs.items()))


def order_key(ins: tuple[int, ...], name: str, extra: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The canonical-order key of an op: its input indices sorted newest first, then the op
    and its exact inputs and attributes. Building a graph with strictly increasing keys has
    exactly one order per graph (always the available op with the smallest key: an op that
    uses a new tensor has a larger newest input than any op before it). Keying on the input
    tuple as written, oldest first, would make some graphs unreachable (div(t5, t8) after
    sqrt(t7), say)."""
    return (tuple(sorted(ins, reverse=True)), name, ins, extra)


# Reductions stay out even when the spec has one (see config.py): an accumulator or a
# matmul covers the reductions the experts need.
_NEVER_ADDED = frozenset({"reduce_sum"})


def _op_sets(spec: KernelGraph, cfg: SearchConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The config's kernel and block op sets, plus every op the spec itself uses (nTrans's
    `sub` is in no preset): a rewrite of a program needs at least that program's ops."""
    used = sorted({n.op for n in spec.nodes} - _NEVER_ADDED - {"customized"})
    kernel = cfg.kernel_ops + tuple(o for o in used if o not in cfg.kernel_ops and get_op(o).level != "block")
    block = cfg.block_ops + tuple(o for o in used if o not in cfg.block_ops and get_op(o).level != "kernel")
    # Promising first: the accumulators that tile the spec's reductions, then the spec's
    # own ops before the rest, so that a time-limited depth-first run tries rms_norm on a
    # tile before the square/sum/sqrt/div subtrees that spell it out; the spec's ops in the
    # order it first applies them (rms_norm, transpose, then the matmul on qknorm), which
    # is the order a fused kernel applies them too. Accumulators first because the
    # canonical order builds a row sum of exp(q @ k) before the matmul with V that uses the
    # same exp: with matmul first, that matmul's whole subtree (each closing starting a
    # second kernel) came before flash decoding's first kernel. Among the accumulators the
    # row sum (accum_sum_lastdim) first: it writes a column where the loop sum writes a
    # whole tile, and flash decoding's partial row sums are that column (with the loop sum
    # first, gqa's opening found an 8.04 us graph at 1084 states and not the expert's 7.85
    # in 20 000; row sum first, the expert's at 902).
    first = sorted(ACCUMULATORS, key=lambda o: (o != "accum_sum_lastdim", o)) + list(
        dict.fromkeys(n.op for n in spec.nodes)
    )
    return _first(kernel, first), _first(block, first)


def _first(ops: tuple[str, ...], first: list[str]) -> tuple[str, ...]:
    return tuple(o for o in first if o in ops) + tuple(o for o in ops if o not in first)


def _spec_constants(spec: KernelGraph) -> list[Fraction]:
    """Scalars the search may use: those of the spec, and those its rms_norm implies."""
    out: set[Fraction] = set()
    for n in spec.nodes:
        for k in ("c", "eps"):
            if k in n.attrs:
                out.add(n.attrs[k])
        if n.op == "rms_norm":
            out.add(Fraction(1, spec.types[n.inputs[0]].dims[-1]))
    return sorted(out)


# A tensor's value is held whole (a block tensor over every block and iteration at once: the
# executor is vectorized); beyond this many elements a candidate op is pruned rather than
# evaluated (a gated_mlp search at paper size otherwise built a 4096 x 262144 kernel matmul
# and ran out of 24 GB).
MAX_VALUE_ELEMENTS = 1 << 24


# Iterative broadening's first round (Searcher._pass): the top-level actions it runs and the
# states each gets; both double each round. Their ratio is about the states per action
# that reach the flash-decoding experts from their openings (gqa 712, qknorm 2 836; the
# openings are 148th and 93rd) and most openings are exhausted in under 10 states.
FIRST_ACTIONS = 2
FIRST_CAP = 64


# Bytes of op values the search keeps memoized (Searcher._value), least recently used out.
MEMO_BYTES = 1 << 30


def _nbytes(v: Any) -> int:
    """About what a memoized value holds: its residue arrays (p, and q when it has one)."""
    a = getattr(getattr(v, "p", None), "a", None)
    return 2 * int(getattr(a, "nbytes", 0)) + 1


def node_out(bg: BlockGraph) -> int:
    return bg.nodes[-1].outputs[0]


def _all_blocks_size(bg: BlockGraph, tid: int) -> int:
    iters = bg.forloop_range if bg.stage[tid] == "loop" else 1
    return math.prod(bg.grid_dims) * iters * math.prod(bg.types[tid].dims)


def _tile_bytes(t: TensorType, imap: Map3, fd: int, grid: Map3, f: int) -> int:
    dims = list(t.dims)
    for g, d in enumerate(imap):
        if d >= 0:
            dims[d] //= grid[g]
    if fd >= 0:
        dims[fd] //= f
    return math.prod(dims) * ITEMSIZE[t.dtype]


def _smem_bytes(bg: BlockGraph) -> int:
    """Shared memory if every block tensor had its own buffer (no liveness reuse yet), with
    accumulators and reductions in float32 as the kernels keep them."""
    total = 0
    for tid, t in enumerate(bg.types):
        size = 4 if tid not in bg.inputs and t.dtype != "float32" and _is_f32(bg, tid) else ITEMSIZE[t.dtype]
        total += math.prod(t.dims) * size
    return total


def _is_f32(bg: BlockGraph, tid: int) -> bool:
    for n in bg.nodes:
        if tid in n.outputs:
            return get_op(n.op).kind in ("accum", "reduce") or n.op == "exp"
    return False


def _freeze(bg: BlockGraph) -> BlockGraph:
    """A copy of `bg` as it stands (the search keeps mutating the original)."""
    out = BlockGraph(bg.grid_dims, bg.forloop_range, bg.block_dims)
    for bi in bg.block_inputs:
        out.new_input(TensorType(bi.dims, bi.dtype), bi.imap, bi.forloop_dim)
    for n in bg.nodes:
        out.add_op(n.op, list(n.inputs), **n.attrs)
    for bo in bg.block_outputs:
        out.new_output(bo.tensor, bo.omap)
    return out


def _run_values(g: KernelGraph, ev: Evaluator, inputs: list[Any]) -> list[Any]:
    """Values of `g`'s outputs under the evaluator (used for the spec's fingerprints)."""
    vals: dict[int, Any] = dict(zip(g.inputs, inputs))
    for k, node in enumerate(g.nodes):
        if node.op == "customized":
            bg = node.attrs["block_graph"]
            bvals: dict[int, Any] = {
                t: ev.split(vals[i], bg, j) for j, (t, i) in enumerate(zip(bg.inputs, node.inputs))
            }
            for bk, bn in enumerate(bg.nodes):
                bvals.update(zip(bn.outputs, ev.apply(bg, bk, [bvals[i] for i in bn.inputs], 4)))
            vals.update(
                {o: ev.merge(bvals[bo.tensor], bg, j) for j, (o, bo) in enumerate(zip(node.outputs, bg.block_outputs))}
            )
        else:
            vals.update(zip(node.outputs, ev.apply(g, k, [vals[i] for i in node.inputs], 0)))
    return [vals[o] for o in g.outputs]
