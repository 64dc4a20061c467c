"""The runnable examples of docs/sdk.md run as written against two real regional servers."""

from __future__ import annotations

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
