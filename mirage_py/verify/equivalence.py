"""Probabilistic equivalence of two kernel graphs, with a stated error bound.

k independent trials; trial t uses seed s = seed + t, field FIELDS[s mod 4] (or the one
asked for), fresh inputs and fresh keyed functions, all drawn from s, so a counterexample is
reproduced by `equivalent(spec, candidate, trials=1, seed=s)`. Outputs may match in any
order: a matching must hold in every trial, and every shape-compatible matching counts in the
union bound. Passing every trial is an accept only if the bound is below 1: trials that all
met a zero divisor prove nothing, and the verdict says "inconclusive". docs/verification.md
derives the bound and says when it does not apply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from ..ir.graph import KernelGraph
from .degree import degrees
from .ffexec import INPUT_BITS, FFTensor, FieldOps, OutsideFragment, residues, run_ff, sample_inputs
from .fields import FIELDS, Field

# Four trials keep every benchmark at paper size far below 2^-50 (benchmarks/bench_verify.py
# prints the figures): the heaviest, gated_mlp (degree 5 with exp, 2^-16.9 a trial), needs
# three; the fourth leaves room for a trial that meets a zero divisor.
DEFAULT_TRIALS = 4
TARGET_BOUND = 2.0**-50

# "inconclusive": every trial passed, but the bound they give is 1 (each met a zero divisor,
# or the degree is too high for the sample set): nothing is proven, so it is no accept.
Reason = Literal["mismatch", "outside-fragment", "inconclusive"]


@dataclass
class Verdict:
    equivalent: bool
    trials: int
    error_bound: float | None  # P(accepting a non-equivalent pair); None when not accepted
    reason: Reason | None = None
    output: str | None = None  # the spec output that differed
    counterexample_seed: int | None = None
    permutation: dict[str, str] | None = None  # spec output -> candidate output
    zero_divisors: int = 0
    degree: int = 0
    permutations: int = 1  # shape-compatible matchings, counted in the bound
    fields: list[str] = field(default_factory=list)
    detail: str = ""

    def __bool__(self) -> bool:
        return self.equivalent

    @property
    def bound_log2(self) -> float | None:
        if self.error_bound is None:
            return None
        return -math.inf if self.error_bound == 0 else math.log2(self.error_bound)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["error_bound_log2"] = self.bound_log2
        return d


def _signature(kg: KernelGraph) -> dict[str, tuple[int, ...]]:
    return {n: kg.types[t].dims for n, t in zip(kg.input_names, kg.inputs)}


def _feeds(spec: KernelGraph, cand: KernelGraph) -> dict[str, str]:
    """Which spec input feeds each candidate input: by name, else by position."""
    s, c = _signature(spec), _signature(cand)
    if s == c:
        return {n: n for n in cand.input_names}
    if [s[n] for n in spec.input_names] == [c[n] for n in cand.input_names]:
        return dict(zip(cand.input_names, spec.input_names))
    raise ValueError(f"the graphs take different inputs: {sorted(s.items())} vs {sorted(c.items())}")


def _perfect_matching(allowed: list[set[int]]) -> list[int] | None:
    """A bijection i -> j with j in allowed[i] (identity preferred), or None."""
    n = len(allowed)
    match_of: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in sorted(allowed[i], key=lambda j: (j != i, j)):
            if j not in seen:
                seen.add(j)
                if j not in match_of or augment(match_of[j], seen):
                    match_of[j] = i
                    return True
        return False

    for i in range(n):
        if not augment(i, set()):
            return None
    out = [0] * n
    for j, i in match_of.items():
        out[i] = j
    return out


def trial_bound(degree: int, uses_exp: bool, f: Field) -> float:
    """One trial's probability of passing a non-equivalent pair (docs/verification.md)."""
    size = min(f.q, 1 << INPUT_BITS) if uses_exp else 1 << INPUT_BITS
    return min(1.0, degree / size)


def _trial_field(seed: int, f: Field | None) -> Field:
    return f if f is not None else FIELDS[seed % len(FIELDS)]


def equivalent(
    spec: KernelGraph,
    candidate: KernelGraph,
    trials: int | None = None,
    seed: int = 0,
    field: Field | None = None,
) -> Verdict:
    k = DEFAULT_TRIALS if trials is None else trials
    if k < 1:
        raise ValueError(f"trials must be at least 1, got {k}")
    feeds = _feeds(spec, candidate)
    so, co = spec.output_names, candidate.output_names
    sdims = [spec.types[t].dims for t in spec.outputs]
    cdims = [candidate.types[t].dims for t in candidate.outputs]
    allowed = [{j for j, d in enumerate(cdims) if d == sd} for sd in sdims]
    if len(so) != len(co) or _perfect_matching(allowed) is None:
        return Verdict(
            equivalent=False,
            trials=0,
            error_bound=None,
            reason="mismatch",
            output=so[0] if so else None,
            detail=f"outputs differ in number or shape: {[list(d) for d in sdims]} vs {[list(d) for d in cdims]}",
        )
    ds, dc = degrees(spec), degrees(candidate)
    degree = max(ds.degree, dc.degree, 1)
    uses_exp = ds.exps + dc.exps > 0
    # Shape equality is an equivalence relation: the matchings number Π (class size)!.
    classes: dict[tuple[int, ...], int] = {}
    for d in sdims:
        classes[d] = classes.get(d, 0) + 1
    perms = math.prod(math.factorial(n) for n in classes.values())

    shapes = [spec.types[t].dims for t in spec.inputs]
    zero_total, clean_bounds, used = 0, [], []
    ins: dict[str, FFTensor] | None = None
    for t in range(k):
        s = seed + t
        f = _trial_field(s, field)
        used.append(str(f))
        ins = sample_inputs(spec.input_names, shapes, s, reuse=ins)
        cand_ins = {cn: ins[sn] for cn, sn in feeds.items()}
        F = FieldOps(f, key=s)
        try:
            ys = [residues(y, f.p) for y in run_ff(spec, ins, F)]
            yc = [residues(y, f.p) for y in run_ff(candidate, cand_ins, F)]
        except OutsideFragment as e:
            return Verdict(
                equivalent=False,
                trials=t + 1,
                error_bound=None,
                reason="outside-fragment",
                counterexample_seed=s,
                fields=used,
                detail=str(e),
            )
        zero_total += F.zero_divisors
        allowed = [{j for j in allowed[i] if np.array_equal(ys[i], yc[j])} for i in range(len(ys))]
        match = _perfect_matching(allowed)
        if match is None:
            bad = next((i for i, a in enumerate(allowed) if not a), 0)
            return Verdict(
                equivalent=False,
                trials=t + 1,
                error_bound=None,
                reason="mismatch",
                output=so[bad],
                counterexample_seed=s,
                zero_divisors=zero_total,
                degree=degree,
                permutations=perms,
                fields=used,
                detail=f"output {so[bad]!r} has no equal candidate output in trial {t} (seed {s}, field {f})",
            )
        if F.zero_divisors == 0:
            clean_bounds.append(trial_bound(degree, uses_exp, f))
    # A trial that met a zero divisor still had to pass, but does not tighten the bound;
    # C(k, m) pays for which m of the k trials happened to be clean.
    m = len(clean_bounds)
    bound = perms * math.comb(k, m) * math.prod(clean_bounds)
    assert match is not None
    if bound >= 1:
        why = (
            f"every trial met a zero divisor ({zero_total} in all; inv(0) = 0 was used), so none bounds the error"
            if m == 0
            else f"the clean ones bound the error only by {bound:.3g} (degree {degree}); more trials may"
        )
        verdict = Verdict(
            equivalent=False,
            trials=k,
            error_bound=None,
            reason="inconclusive",
            detail=f"all {k} trials passed, but {why}",
        )
    else:
        verdict = Verdict(
            equivalent=True,
            trials=k,
            error_bound=bound,
            permutation={so[i]: co[j] for i, j in enumerate(match)},
            detail=f"degree {degree}, {ds.exps + dc.exps} exp / {ds.opaques + dc.opaques} keyed / "
            f"{ds.inverses + dc.inverses} inverse op applications",
        )
    verdict.zero_divisors, verdict.degree, verdict.permutations, verdict.fields = zero_total, degree, perms, used
    return verdict
