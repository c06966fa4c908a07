"""The `mirage-py` command line: a thin click layer over the packages, no logic of its own.

Exit codes (DESIGN.md, "Command-line contract"), applied by `_Cli.main` however the CLI is
entered (console script, `python -m mirage_py`, click's test runner):
  0 success; 1 a negative answer (a command returns 1);
  2 bad input or usage: one line on stderr, no traceback;
  3 internal error: one line on stderr naming a file that holds the full traceback.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import click

from . import __version__
from .benchmarks import SIZES, Benchmark, Size, all_benchmarks
from .codegen.cost import summary as cost_summary
from .ir import GraphError, SchemaError, dumps, load
from .ir.dtypes import DTYPES
from .ir.errors import InputError
from .ir.show import graph_json, render_dot, render_table, render_text, report_header, write_atomic
from .search.config import PRESETS, SMEM_LIMIT, get_config

PROG = "mirage-py"
EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
# The user's mistakes. Anything else escaping a command is a bug in the tool (exit 3).
USER_ERRORS = (GraphError, SchemaError, InputError, click.ClickException)
# click >= 8.2 raises this for a group called with no command; older click just exits 0.
_NO_COMMAND: tuple[type[BaseException], ...] = tuple(
    c for c in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if isinstance(c, type)
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _user_error(e: BaseException) -> str:
    if isinstance(e, click.UsageError) and e.ctx is not None:
        return f"{e.ctx.command_path}: error: {_one_line(e.format_message())} (see '{e.ctx.command_path} --help')"
    msg = e.format_message() if isinstance(e, click.ClickException) else str(e)
    return f"{PROG}: error: {_one_line(msg)}"


def _internal_error(e: BaseException, argv: Sequence[str] | None) -> str:
    """Write the traceback to a file and return the one line that points at it."""
    text = (
        f"{PROG} {__version__} internal error\nargv: {list(sys.argv[1:] if argv is None else argv)}\n"
        f"python: {sys.version}\n\n{traceback.format_exc()}"
    )
    summary = _one_line(f"{type(e).__name__}: {e}")[:200]
    try:
        fd, path = tempfile.mkstemp(prefix=f"{PROG}-crash-", suffix=".txt")
        with open(fd, "w") as f:
            f.write(text)
    except OSError:
        sys.stderr.write(text)
        return f"{PROG}: internal error ({summary}); the traceback is above (it could not be written to a file)"
    return f"{PROG}: internal error ({summary}); full traceback written to {path}"


def run_guarded(invoke: Callable[[], Any], argv: Sequence[str] | None = None) -> int:
    """Run `invoke` (click in non-standalone mode) under the exit-code policy."""
    try:
        rv = invoke()
    except _NO_COMMAND as e:  # `mirage-py` alone: show the help
        click.echo(cast(click.ClickException, e).format_message(), err=True)
        return EXIT_USAGE
    except USER_ERRORS as e:
        click.echo(_user_error(e), err=True)
        return EXIT_USAGE
    except click.Abort:
        click.echo(f"{PROG}: interrupted", err=True)
        return 130
    except Exception as e:
        click.echo(_internal_error(e, argv), err=True)
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else EXIT_OK


class _Cli(click.Group):
    """The root group. Overriding `main` puts the exit-code policy on every way in."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def invoke() -> Any:
            return super(_Cli, self).main(
                args,
                prog_name or PROG,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )

        code = run_guarded(invoke, args)
        if standalone_mode:
            sys.exit(code)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    return int(cli.main(argv, prog_name=PROG, standalone_mode=False))


def _write(path: Path, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError as e:
        raise click.FileError(str(path), hint=e.strerror or str(e)) from None


@click.group(PROG, cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
def cli() -> None:
    """mirage-py: a multi-level tensor-program superoptimizer (after Mirage, OSDI 2025).

    Exit codes: 0 success, 1 negative answer, 2 bad input or usage, 3 internal error.
    """


# ---------------------------------------------------------------------------------------
# show


@cli.command()
@click.argument("graph", type=click.Path(path_type=Path))
@click.option(
    "--dot", "dot_file", type=click.Path(dir_okay=False, path_type=Path), help="Also write Graphviz dot text to FILE."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of text.")
def show(graph: Path, dot_file: Path | None, as_json: bool) -> None:
    """Show a graph file: its kernels, block graphs, tiles and hash."""
    kg = load(graph)
    if dot_file is not None:
        _write(dot_file, render_dot(kg))
    if as_json:
        click.echo(json.dumps({**report_header(__version__, None), **graph_json(kg), **cost_summary(kg)}))
    else:
        click.echo(render_text(kg))


# ---------------------------------------------------------------------------------------
# benchmarks


@cli.group()
def benchmarks() -> None:
    """The paper's benchmark programs: list them, export their spec and expert graphs."""


@benchmarks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of a table.")
def benchmarks_list(as_json: bool) -> None:
    """List the benchmarks with their search preset, batches, sizes and description."""
    benches = list(all_benchmarks().values())
    if as_json:
        rows = [
            {
                "name": b.name,
                "preset": b.preset,
                "batches": list(b.batches),
                "sizes": list(SIZES),
                "description": b.description,
            }
            for b in benches
        ]
        click.echo(json.dumps({**report_header(__version__, None), "benchmarks": rows}))
        return
    table = [[b.name, b.preset, ",".join(map(str, b.batches)), ",".join(SIZES), b.description] for b in benches]
    click.echo(render_table(["name", "preset", "batches", "sizes", "description"], table))


def _benchmark(ctx: click.Context, param: click.Parameter, name: str) -> Benchmark:
    known = all_benchmarks()
    if name not in known:
        raise click.BadParameter(f"unknown benchmark {name!r} (known: {', '.join(known)})", ctx, param)
    return known[name]


@benchmarks.command("export")
@click.argument("name", callback=_benchmark)
@click.option("--batch", type=click.IntRange(min=1), help="Batch size b (default: the benchmark's first).")
@click.option(
    "--size", type=click.Choice(SIZES), default="paper", show_default=True, help="The paper's shapes or small ones."
)
@click.option(
    "--spec",
    "spec_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the spec graph here.",
)
@click.option(
    "--expert", "expert_file", type=click.Path(dir_okay=False, path_type=Path), help="Write the expert μGraph here."
)
def benchmarks_export(name: Benchmark, batch: int | None, size: str, spec_file: Path, expert_file: Path | None) -> None:
    """Write benchmark NAME's spec (and expert) graph as JSON files."""
    bench, sz = name, cast(Size, size)
    # Build everything before writing anything, so a failure leaves no file behind.
    graphs = [("spec", spec_file, bench.spec(sz, batch))]
    if expert_file is not None:
        graphs.append(("expert", expert_file, bench.expert(sz, batch)))
    for what, path, g in graphs:
        _write(path, dumps(g) + "\n")
        n = len(g.nodes)
        click.echo(f"wrote {path}: {bench.name} {what}, size {size}, {n} kernel{'s' if n != 1 else ''}")


# ---------------------------------------------------------------------------------------
# Later commands attach to `cli` below, each a thin call into its package: emit and run
# (codegen), check (pipeline), cache (search).


# ---------------------------------------------------------------------------------------
# emit and run (codegen)


@cli.command()
@click.argument("graph", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--spec", "spec_file", type=click.Path(path_type=Path), help="Prove GRAPH equivalent to SPEC first.")
@click.option("--target", type=click.Choice(sorted(SMEM_LIMIT)), default="sm_90", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def emit(graph: Path, out: Path, spec_file: Path | None, target: str, as_json: bool) -> int:
    """Write GRAPH as CUDA: OUT/kernels/*.cu, runtime/*.cuh, launch.json, mugraph.json,
    module.py. With --spec, exit 1 (writing nothing) unless GRAPH is proven equivalent."""
    from .codegen.commands import NotEquivalent, emit_to

    try:
        res = emit_to(load(graph), out, load(spec_file) if spec_file else None, target)
    except NotEquivalent as e:
        click.echo(f"{PROG}: {e}", err=True)
        return EXIT_NEGATIVE
    if as_json:
        click.echo(json.dumps({**report_header(__version__, None), **res.to_json()}))
    else:
        rows = [[k.name, k.op, k.grid, k.block[0], k.forloop, k.shared_bytes, k.barriers] for k in res.program.kernels]
        click.echo(render_table(["kernel", "op", "grid", "threads", "loop", "smem", "barriers"], rows))
        proven = f", proven equivalent to {spec_file} ({res.trials} trials)" if res.verified else ""
        click.echo(f"wrote {out}: {len(rows)} kernel(s) for {target}{proven}")
    return EXIT_OK


@cli.command()
@click.argument("path", metavar="GRAPH.json|OUT", type=click.Path(exists=True, path_type=Path))
@click.option("--emulate/--gpu", "emulate", default=True, help="CPU emulation of the .cu files (default) or CuPy.")
@click.option("--check", is_flag=True, help="Compare every output with the float64 reference; exit 1 on a mismatch.")
@click.option("--target", type=click.Choice(sorted(SMEM_LIMIT)), default="sm_90", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def run(path: Path, emulate: bool, check: bool, target: str, seed: int, as_json: bool) -> int:
    """Run an emitted OUT (or GRAPH.json, emitted first) on random inputs."""
    from .codegen.commands import run_path

    res = run_path(path, "emulate" if emulate else "gpu", check, target, seed)
    if as_json:
        click.echo(json.dumps({**report_header(__version__, seed), **res.to_json()}))
    else:
        for row in res.to_json()["outputs"]:
            verdict = "not checked"
            if "ok" in row:
                verdict = f"scaled error {row['scaled']:.3g} (tolerance {row['tolerance']:g})"
                verdict += " ok" if row["ok"] else " MISMATCH"
            click.echo(f"{row['name']} {row['shape']}: {verdict}")
        if res.error:
            click.echo(f"{PROG}: {res.error}", err=True)
        click.echo(f"{res.kernels} kernel(s) on {res.device} in {res.seconds:.2f} s: {'ok' if res.ok else 'FAILED'}")
    return EXIT_OK if res.ok else EXIT_NEGATIVE


# ---------------------------------------------------------------------------------------
# verify


@cli.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option(
    "--trials", type=click.IntRange(min=1), help="Independent finite-field trials (default: enough for 2^-50)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first trial.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def verify(a: Path, b: Path, trials: int | None, seed: int, as_json: bool) -> int:
    """Prove B equivalent to A (probabilistically, over finite fields). Exit 0 if proven,
    1 if not (a mismatch, a graph outside the fragment the test decides, or inconclusive:
    every trial passed but none bounds the error, e.g. each met a zero divisor)."""
    from .verify import equivalent  # the verifier's numpy work is not needed for --help

    verdict = equivalent(load(a), load(b), trials=trials, seed=seed)
    if as_json:
        click.echo(json.dumps({**report_header(__version__, seed), **verdict.to_json()}))
    elif verdict.equivalent:
        click.echo(f"equivalent: proven in {verdict.trials} trials, error bound {verdict.error_bound:.3g}")
    else:
        where = f" at output {verdict.output}" if verdict.output else ""
        seed_txt = (
            f", counterexample seed {verdict.counterexample_seed}" if verdict.counterexample_seed is not None else ""
        )
        click.echo(f"not proven equivalent: {verdict.reason}{where}{seed_txt}. {verdict.detail}".rstrip())
    return EXIT_OK if verdict.equivalent else EXIT_NEGATIVE


# ---------------------------------------------------------------------------------------
# optimize


@cli.command()
@click.argument("input_file", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--config",
    "preset",
    type=click.Choice(["auto", *PRESETS]),
    default="auto",
    show_default=True,
    help="Search preset; auto picks it from the graph (attention, lora, mlp or default).",
)
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), help="Stop the search after S seconds.")
@click.option("--max-states", type=click.IntRange(min=1), help="Stop the search after N states (deterministic).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Search processes.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Run the sub-spaces here (--jobs processes) or as Ray tasks (needs mirage-py[cluster]).",
)
@click.option("--ray-address", metavar="A", help="Ray cluster to join (default: start a local Ray instance).")
@click.option(
    "--inputs",
    "input_specs",
    metavar="NAME=DxDxD[:dtype]",
    multiple=True,
    help="Shape (and dtype) of one input, repeated: every argument of a PyTorch input, symbolic dims of ONNX.",
)
@click.option("--outputs", metavar="NAME,...", help="Optimize only the subgraph computing these outputs.")
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), help="Kernels in this dtype (default: the spec's).")
@click.option("--target", type=click.Choice(sorted(SMEM_LIMIT)), default="sm_90", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of fingerprints and trials.")
@click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Result cache and checkpoints (default: $XDG_CACHE_HOME/mirage-py/cache.sqlite3).",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the result cache (no checkpoints either).")
@click.option("--resume", is_flag=True, help="Continue an interrupted search from its recorded sub-spaces.")
@click.option("--require-improvement", is_flag=True, help="Exit 1 when the search finds nothing better than the spec.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (progress stays on stderr).")
def optimize(
    input_file: Path,
    out: Path,
    preset: str,
    time_limit: float | None,
    max_states: int | None,
    jobs: int,
    executor: str,
    ray_address: str | None,
    input_specs: tuple[str, ...],
    outputs: str | None,
    dtype: str | None,
    target: str,
    seed: int,
    cache_path: Path | None,
    no_cache: bool,
    resume: bool,
    require_improvement: bool,
    as_json: bool,
) -> int:
    """Search for a faster equivalent μGraph of INPUT (model.onnx, file.py:NAME or
    graph.json) and write OUT: spec.json, mugraph.json (the winner, or the spec itself when
    nothing better is found), kernels/*.cu, runtime/*.cuh, launch.json, module.py,
    weights.npz (when INPUT has weights), report.json and report.md."""
    from tqdm import tqdm

    from .frontends import load_input
    from .frontends.torch import parse_input_specs
    from .pipeline import OptimizeOptions, guess_preset
    from .pipeline import optimize as run_optimize
    from .search.cache import default_cache_path
    from .search.enumerate import Budget
    from .search.executors import import_ray

    if no_cache and (cache_path is not None or resume):
        raise click.UsageError("--no-cache excludes --cache and --resume")
    if ray_address is not None and executor != "ray":
        raise click.UsageError("--ray-address needs --executor ray")
    if executor == "ray":
        import_ray()  # a missing Ray is a one-line error now, not after the cache lookup
    click.echo(f"loading {input_file}", err=True)
    names = [n.strip() for n in outputs.split(",") if n.strip()] if outputs else None
    loaded = load_input(str(input_file), parse_input_specs(input_specs), names, dtype)
    spec = loaded.graph
    if preset == "auto":
        preset = guess_preset(spec)
    click.echo(
        f"spec: {len(spec.nodes)} op(s), inputs {', '.join(loaded.runtime_inputs) or 'none'}"
        f"{', weights ' + ', '.join(loaded.weights) if loaded.weights else ''}; preset {preset}",
        err=True,
    )
    cache = None if no_cache else (cache_path or default_cache_path())
    budget = Budget(max_states, time_limit)
    opts = OptimizeOptions(
        get_config(preset, target=target),
        budget,
        jobs,
        seed,
        cache=cache,
        resume=resume,
        executor=executor,
        ray_address=ray_address,
    )
    limits = ", ".join(f for f in (max_states and f"{max_states} states", time_limit and f"{time_limit} s") if f)
    started: list[bool] = []

    def on_states(n: int) -> None:
        if not started:  # once the search proper runs (Ctrl-C from here on keeps the best)
            started.append(True)
            click.echo(
                f"searching {input_file} ({preset}, {jobs} job(s), {limits or 'no budget: Ctrl-C stops'})", err=True
            )
        bar.update(n - bar.n)

    with tqdm(total=max_states, unit="state", desc="search", file=sys.stderr, disable=None, leave=False) as bar:
        report = run_optimize(
            spec,
            out,
            opts,
            on_states=on_states,
            weights=loaded.weights,
            source=loaded.source or str(input_file),
            on_stage=lambda msg: tqdm.write(msg, file=sys.stderr),  # above the bar, if one shows
        )
    _cache_notes(report, cache)
    if as_json:
        click.echo(json.dumps(report))
    else:
        b, base, s = report["best"], report["baseline"], report["search"]
        click.echo(
            f"{'found' if report['found'] else 'nothing better than the spec'}: "
            f"{base['kernels']} -> {b['kernels']} kernels, {base['modeled_us']} -> {b['modeled_us']} us (modelled); "
            f"{s['states']} states in {s['seconds']} s ({s['stop_reason']}); wrote {out}"
        )
    return EXIT_NEGATIVE if require_improvement and not report["found"] else EXIT_OK


def _cache_notes(report: dict[str, Any], cache: Path | None) -> None:
    """What the cache did, on stderr (stdout belongs to --json)."""
    s = report["search"]
    if cache is None:
        return
    if report["cache_hit"]:
        click.echo(f"cache hit: {s['cache_key'][:12]} in {cache} (winner re-verified, no search)", err=True)
    elif s.get("reused_parts"):
        click.echo(f"resumed: {s['reused_parts']} of {s['parts']} sub-spaces read back from {cache}", err=True)
    if s["stop_reason"] == "interrupted" and s.get("cache_key"):
        click.echo(
            f"interrupted: {s.get('finished_parts', 0)} of {s['parts']} sub-spaces recorded in {cache}; "
            "run the same command with --resume to continue",
            err=True,
        )


# ---------------------------------------------------------------------------------------
# check


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), help="Baseline results (JSON).")
@click.option("--update-baseline", is_flag=True, help="Write this run's results to --baseline (if every case passes).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML to FILE.")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path), help="Also write the Markdown to FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of Markdown.")
def check(
    manifest: Path,
    baseline: Path | None,
    update_baseline: bool,
    junit: Path | None,
    summary: Path | None,
    as_json: bool,
) -> int:
    """Re-run MANIFEST's optimize cases (state budgets: deterministic) and compare them with
    their expectations and the baseline: found, verified, best modelled time within the
    tolerance, kernels build. Exit 1 on any regression or failing case. Prints a Markdown
    summary; progress goes to stderr."""
    from .check import junit_xml, run_check, summary_markdown

    run = run_check(manifest, baseline, update_baseline, log=lambda msg: click.echo(msg, err=True))
    md = summary_markdown(run)
    if junit is not None:
        _write(junit, junit_xml(run))
    if summary is not None:
        _write(summary, md)
    if as_json:
        click.echo(json.dumps({**report_header(__version__, None), **run.to_json()}))
    else:
        click.echo(md, nl=False)
    return EXIT_OK if run.ok else EXIT_NEGATIVE


# ---------------------------------------------------------------------------------------
# cache


def _open_cache(path: Path | None) -> Any:
    from .search.cache import CacheError, ResultCache, default_cache_path

    path = path or default_cache_path()
    if not path.exists():
        raise InputError(f"no cache at {path}")
    try:
        return ResultCache(path)
    except CacheError as e:
        raise InputError(str(e)) from None


_CACHE_OPTION = click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The cache file (default: $XDG_CACHE_HOME/mirage-py/cache.sqlite3).",
)


@cli.group()
def cache() -> None:
    """The search-result cache: list, show and clear its entries."""


@cache.command("list")
@_CACHE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of a table.")
def cache_list(cache_path: Path | None, as_json: bool) -> None:
    """One line per stored result: key prefix, spec hash, config, stop reason, states,
    best modelled cost, date. A row whose checksum fails is marked corrupt."""
    import datetime

    with _open_cache(cache_path) as db:
        rows = db.summaries()
        parts = db.count_parts()
    if as_json:
        click.echo(json.dumps({"entries": [vars(r) for r in rows], "checkpoints": parts}))
        return
    table = [
        [
            r.key[:12],
            r.spec_hash[:12],
            r.config_name,
            r.stop_reason if r.ok else f"{r.stop_reason} (CORRUPT)",
            r.states,
            "-" if r.best_cost is None else f"{r.best_cost:.3f}",
            datetime.datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M"),
        ]
        for r in rows
    ]
    click.echo(render_table(["key", "spec", "config", "stop", "states", "best_us", "date"], table))
    click.echo(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, {parts} sub-space checkpoint(s)")


@cache.command("show")
@click.argument("key")
@_CACHE_OPTION
def cache_show(key: str, cache_path: Path | None) -> None:
    """Print the entry whose key starts with KEY as JSON (candidates as graph JSON)."""
    from .search.cache import BadEntry

    with _open_cache(cache_path) as db:
        try:
            full = db.find_key(key)
            entry = db.raw(full)
        except KeyError as e:
            raise InputError(e.args[0]) from None
        except BadEntry as e:
            raise InputError(f"cache entry {key} is corrupt or foreign: {e}") from None
    click.echo(json.dumps(entry, indent=1))


@cache.command("clear")
@_CACHE_OPTION
def cache_clear(cache_path: Path | None) -> None:
    """Delete every stored result and checkpoint."""
    with _open_cache(cache_path) as db:
        n, m = db.clear()
    click.echo(f"deleted {n} entr{'y' if n == 1 else 'ies'} and {m} sub-space checkpoint(s)")
