"""gamesdk.sdp and gamesdk.qos are sans-IO: no clocks, sockets, event loops, threads, randomness or pygame."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"asyncio", "socket", "selectors", "time", "random", "threading", "pygame", "server"}
# Import direction (STYLE.md section 2): sdp -> qos.model (and ice.candidate, the a=candidate value), never the
# other way; neither imports the rest but gamesdk._mypyc (a decorator for the compiled build, no I/O).
ALLOWED_GAMESDK = {
    "sdp": {"gamesdk.errors", "gamesdk.sdp", "gamesdk.qos", "gamesdk.ice.candidate", "gamesdk._mypyc"},
    "qos": {"gamesdk.errors", "gamesdk.qos", "gamesdk._mypyc"},
}
FILES = sorted((ROOT / "gamesdk" / "sdp").glob("*.py")) + sorted((ROOT / "gamesdk" / "qos").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_pure_imports(path: Path) -> None:
    package = path.parent.name
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {module}"
        if top == "gamesdk":
            assert any(
                module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED_GAMESDK[package]
            ), f"{package}/{path.name} imports {module}"


def test_there_are_files_to_check() -> None:
    assert len(FILES) >= 7
