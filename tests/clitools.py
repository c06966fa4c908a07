"""Helpers shared by the tests (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path
from types import ModuleType

from click.testing import CliRunner, Result

from mirage_py.cli import cli
from mirage_py.ir import new_block_graph, new_kernel_graph, save


def invoke(*args: str) -> Result:
    """Run the CLI in-process; anything escaping the exit-code policy fails the test."""
    try:  # click 8.1 mixes stderr into stdout unless asked not to; 8.2+ keeps both
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    return runner.invoke(cli, list(args), catch_exceptions=False)


def save_over_smem_graph(path: Path) -> None:
    """One customized kernel that keeps two 1 MB tiles in shared memory: no plan fits."""
    g = new_kernel_graph()
    x = g.new_input((64, 8192), "float16", "X")
    w = g.new_input((8192, 64), "float16", "W")
    bg = new_block_graph((1, 1, 1), 1)
    bg.new_output(bg.matmul(bg.new_input(x, (-1, -1, -1)), bg.new_input(w, (-1, -1, -1))), (-1, -1, -1))
    (y,) = g.customized([x, w], bg)
    g.mark_output(y, "Y")
    save(g, path)


def import_file(path: Path, name: str) -> ModuleType:
    """Load a Python file (an emitted module.py, an example, a script) as module `name`.
    Registered in sys.modules first: dataclasses look their module up while it loads."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def default_sigint() -> None:
    """preexec_fn for a child that a test interrupts with SIGINT. A job started in the
    background by a non-interactive shell (as CI may start the test run) inherits SIGINT
    ignored, and Python keeps an ignored SIGINT ignored: the child would never see it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
