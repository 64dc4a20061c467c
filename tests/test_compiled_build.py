"""The optional compiled build (setup.py, ``GAMESDK_MYPYC=1``): the modules it lists exist, and the suite runs
against the build it says it runs against (``.ci/run`` sets ``GAMESDK_EXPECT_COMPILED=1`` for the compiled run)."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mypyc_modules() -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "MYPYC_MODULES":
            assert node.value is not None
            return list(ast.literal_eval(node.value))
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "MYPYC_MODULES"
                                                for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no MYPYC_MODULES")


def test_the_compiled_set_names_modules_of_the_package() -> None:
    modules = mypyc_modules()
    assert modules
    for path in modules:
        assert path.split("/")[0] in ("gamesdk", "server"), path
        assert (REPO / path).is_file(), path


def test_the_suite_runs_on_the_build_it_claims() -> None:
    expect_compiled = os.environ.get("GAMESDK_EXPECT_COMPILED", "") == "1"
    for path in mypyc_modules():
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        compiled = not str(module.__file__).endswith(".py")
        assert compiled == expect_compiled, f"{module.__name__} from {module.__file__}"


def test_the_compiled_switch_without_mypy_says_what_is_missing(tmp_path: Path) -> None:
    # setup.py asked for the compiled build where mypy cannot be imported: a message and a non-zero exit.
    blocker = tmp_path / "mypyc"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('mypyc is not installed')\n")
    env = dict(os.environ, GAMESDK_MYPYC="1", PYTHONPATH=str(tmp_path))
    done = subprocess.run([sys.executable, str(REPO / "setup.py"), "build_ext", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "GAMESDK_MYPYC=1 needs mypy" in done.stderr
