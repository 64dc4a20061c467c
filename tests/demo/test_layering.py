"""The demo's layering: a pure world, a headless path without pygame, no side effects at import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import demo_game

PACKAGE = Path(demo_game.__file__).parent
ROOT = PACKAGE.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_world_imports_neither_pygame_nor_gamesdk_nor_clocks() -> None:
    forbidden = {"pygame", "gamesdk", "random", "time", "socket", "asyncio", "threading"}
    assert imported_modules(PACKAGE / "world.py") & forbidden == set()


def test_only_net_and_local_may_import_gamesdk() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("net.py", "local.py"):
            continue
        assert "gamesdk" not in imported_modules(path), path


def run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_headless_path_never_loads_pygame() -> None:
    out = run(
        "import sys, demo_game.main, demo_game.headless, demo_game.offline, demo_game.loopback;"
        "print('pygame' in sys.modules)"
    )
    assert out.strip() == "False"


def test_importing_the_window_code_opens_nothing() -> None:
    out = run(
        "import os; os.environ['PYGAME_HIDE_SUPPORT_PROMPT'] = '1';"
        "import pygame, demo_game.window, demo_game.render, demo_game.states, demo_game.screenshot;"
        "print(pygame.display.get_init(), pygame.font.get_init())"
    )
    assert out.strip() == "False False"


def test_python_dash_m_demo_game_runs_headless() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo_game",
            "--offline",
            "--headless",
            "--duration",
            "1",
            "--sim-latency-ms",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "final score: alice@eu.gamesdk.test" in proc.stdout
    assert proc.stderr == ""
