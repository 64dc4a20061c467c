"""The runnable examples of docs/sdk.md run as written against two real regional servers."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from regions import threaded_regions

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["sdk_asyncio.py", "sdk_polling.py"])
def test_example_runs(tmp_path: Path, script: str) -> None:
    with threaded_regions(tmp_path) as (eu, na):
        (eu_host, eu_port), (na_host, na_port) = eu.address, na.address
        result = subprocess.run(  # the exit status is asserted below, with the output
            [sys.executable, str(ROOT / "examples" / script), "--eu", f"{eu_host}:{eu_port}", "--na",
             f"{na_host}:{na_port}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bob got" in result.stdout and "alice got" in result.stdout
    assert "session ended" in result.stdout


@pytest.mark.parametrize("script", ["sdk_asyncio.py", "sdk_polling.py"])
def test_docs_show_the_examples(script: str) -> None:
    doc = (ROOT / "docs" / "sdk.md").read_text(encoding="utf-8")
    body = (ROOT / "examples" / script).read_text(encoding="utf-8")
    assert body.split('"""', 2)[2].strip() in doc


def test_the_turn_based_example_plays_to_the_end(tmp_path: Path) -> None:
    with threaded_regions(tmp_path) as (eu, na):
        (eu_host, eu_port), (na_host, na_port) = eu.address, na.address
        result = subprocess.run(  # the exit status is asserted below, with the output
            [sys.executable, str(ROOT / "examples" / "tictactoe.py"), "--eu", f"{eu_host}:{eu_port}", "--na",
             f"{na_host}:{na_port}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "alice sees bob offline" in out and "alice sees bob online" in out  # presence before the invite
    assert "alice: game over" in out and "bob got game over" in out  # the last message arrived before the end
    assert "bob: session ended: game over" in out


DOCUMENTED = {"gamesdk", "gamesdk.events", "gamesdk.lowlevel", "gamesdk.testing"}


def surface_used(path: Path) -> list[str]:
    """Every gamesdk name ``path`` imports or reaches through an attribute, as ``module.name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gamesdk":
            used += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            used += [alias.name for alias in node.names if alias.name.split(".")[0] == "gamesdk"]
        elif isinstance(node, ast.Attribute) and ast.unparse(node).startswith("gamesdk."):
            used.append(ast.unparse(node))
    return used


@pytest.mark.parametrize("path", [*sorted((ROOT / "examples").glob("*.py")), *sorted((ROOT / "demo_game").rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_and_the_demo_use_only_the_documented_surface(path: Path) -> None:
    outside = []
    for dotted in surface_used(path):
        if dotted in DOCUMENTED:
            continue
        module, _, name = dotted.rpartition(".")
        while module and module not in DOCUMENTED:  # gamesdk.events.X.attr: judge gamesdk.events.X
            module, _, name = module.rpartition(".")
        if not module or name not in importlib.import_module(module).__all__:
            outside.append(dotted)
    assert not outside, f"{path.name} uses names outside the documented surface: {outside}"


@pytest.mark.parametrize("script", ["sdk_asyncio.py", "sdk_polling.py", "tictactoe.py"])
def test_an_example_given_a_bad_address_says_so_in_one_line(script: str) -> None:
    result = subprocess.run(  # the exit status is asserted below, with the output
        [sys.executable, str(ROOT / "examples" / script), "--eu", "eu.example:http", "--na", "127.0.0.1:5062"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: server address 'eu.example:http' must look like udp:HOST:PORT or tls:HOST:PORT"
