"""Session-wide test setup."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`optimize` caches results under $XDG_CACHE_HOME by default: point it at a fresh
    folder, so tests neither read the user's cache nor leave entries in it, and a test run
    never starts with another run's hits. Subprocesses inherit the variable."""
    old = os.environ.get("XDG_CACHE_HOME")
    path = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
