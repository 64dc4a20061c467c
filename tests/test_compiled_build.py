"""The optional compiled build (setup.py, ``GAMESDK_MYPYC=1``): the modules it lists exist, and the suite runs
against the build it says it runs against (``.ci/run`` sets ``GAMESDK_EXPECT_COMPILED=1`` for the compiled run)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

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


def _build_profile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_profile", REPO / "build_profile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GCC = "gcc (Debian 12.2.0-14) 12.2.0\nCopyright (C) 2022 Free Software Foundation, Inc.\n"
CLANG = "Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu\n"


def test_the_profile_guided_step_says_why_it_is_left_out(tmp_path: Path) -> None:
    profile = _build_profile()
    assert profile.why_not_profiled({}, "gcc", GCC, REPO) is None
    assert profile.why_not_profiled({"GAMESDK_MYPYC_PGO": "1"}, "gcc", GCC, REPO) is None
    assert profile.why_not_profiled({"GAMESDK_MYPYC_PGO": "0"}, "gcc", GCC, REPO) == "GAMESDK_MYPYC_PGO=0"
    assert profile.why_not_profiled({}, "cc", None, REPO) == "the C compiler 'cc' did not answer --version"
    assert profile.why_not_profiled({}, "clang", CLANG, REPO) == "the C compiler 'clang' is not GCC"
    (tmp_path / "gamesdk").mkdir()
    (tmp_path / "server").mkdir()
    assert (profile.why_not_profiled({}, "gcc", GCC, tmp_path)
            == "the source tree has no bench, examples to train on")
    assert profile.the_compiler({"CC": "gcc-12 -pthread"}) == "gcc-12"


def test_the_training_runs_are_in_the_tree_it_copies() -> None:
    profile = _build_profile()
    for argv in profile.TRAINING:
        script = REPO / argv[0]
        assert script.is_file(), argv
        assert argv[0].split("/")[0] in profile.TRAINING_TREE, argv
    assert {"gamesdk", "server"} <= set(profile.TRAINING_TREE)
    assert (REPO / "examples" / "eu.toml").is_file()  # the region both benches load
    manifest = (REPO / "MANIFEST.in").read_text()
    assert "include build_profile.py" in manifest
    for part in ("bench", "examples"):
        assert part in manifest, part


def test_a_failed_training_run_stops_the_build_with_its_output(tmp_path: Path) -> None:
    profile = _build_profile()
    (tmp_path / "fails.py").write_text("import sys\nprint('the path broke')\nsys.exit(3)\n")
    (tmp_path / "works.py").write_text("print('fine')\n")
    profile.train(tmp_path, [("works.py",)])
    with pytest.raises(SystemExit) as stopped:
        profile.train(tmp_path, [("works.py",), ("fails.py", "--flag")])
    message = str(stopped.value)
    assert "training run fails.py --flag failed (exit 3)" in message
    assert "the path broke" in message


def test_the_compiled_build_is_not_left_instrumented() -> None:
    # The profile-guided build's first pass writes counters at every exit; the installed build must be the second.
    shared = sorted(REPO.glob("*__mypyc*.so"))
    if os.environ.get("GAMESDK_EXPECT_COMPILED", "") == "1":
        assert shared, "a compiled run without the compiled modules' shared library"
    for library in shared:
        assert b"__gcov_" not in library.read_bytes(), library
