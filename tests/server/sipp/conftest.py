"""Fixtures for the SIPp interop tests: two regional servers (eu, na) on free loopback ports.

``harness.py`` is loaded by path and registered as ``gamesdk_sipp_harness`` (pytest runs with
``--import-mode=importlib``, so sibling modules are not importable by name otherwise).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_harness() -> ModuleType:
    name = "gamesdk_sipp_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("harness.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The only reason to skip: SIPp (Debian sip-tester) is not installed. CI installs it.
    if shutil.which("sipp") is None:
        skip = pytest.mark.skip(reason="sipp (Debian package sip-tester) is not installed")
        here = Path(__file__).parent
        for item in items:
            if Path(str(item.fspath)).parent == here:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    fed = harness.Federation(tmp_path_factory.mktemp("federation"))
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()


@pytest.fixture
def fresh_federation(tmp_path: Path) -> Iterator[Any]:
    """A federation of its own, for tests that leave state behind (failed logins are throttled per address)."""
    fed = harness.Federation(tmp_path)
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()
