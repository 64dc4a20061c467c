"""The pure packages stay sans-IO, and gamesdk never depends on the server (DESIGN section 1, STYLE section 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = ["gamesdk/sip", "gamesdk/sdp", "gamesdk/qos", "gamesdk/channel", "gamesdk/session", "gamesdk/ice"]
FORBIDDEN = {"asyncio", "socket", "selectors", "time", "random", "threading", "pygame"}
PURE_SERVER = [
    "server/location.py",
    "server/registrar.py",
    "server/proxy.py",
    "server/node.py",
    "server/publish.py",
    "server/relay.py",
    "server/billing/model.py",
    *(f"server/policy/{name}.py" for name in ("core", "admission", "config", "model", "lifetime", "hooks", "codec", "queries",
                                              "bridge")),
]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files(*folders: str) -> list[Path]:
    out: list[Path] = []
    for folder in folders:
        path = ROOT / folder
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


@pytest.mark.parametrize("path", files(*PURE, *PURE_SERVER), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_do_no_io(path: Path) -> None:
    bad = {name for name in imported_modules(path) if name.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", files("gamesdk"), ids=lambda p: str(p.relative_to(ROOT)))
def test_gamesdk_never_imports_server_or_demo(path: Path) -> None:
    bad = {name for name in imported_modules(path) if name.split(".")[0] in ("server", "demo_game")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_layering_check_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import socket\nfrom time import monotonic\n", encoding="utf-8")
    assert imported_modules(sample) == {"socket", "time"}
