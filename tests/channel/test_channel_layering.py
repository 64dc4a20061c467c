"""The channel core is sans-IO: no sockets, clocks, event loops, threads or global randomness."""

from __future__ import annotations

import ast
import pathlib

import gamesdk.channel

FORBIDDEN = {"asyncio", "socket", "selectors", "time", "random", "threading", "pygame", "server"}


def test_channel_core_imports_nothing_that_does_io() -> None:
    package = pathlib.Path(gamesdk.channel.__file__).parent
    checked = 0
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
        checked += 1
    assert checked >= 10
