"""The compiled build's profile-guided step (setup.py's ``build_ext``): the modules GAMESDK_MYPYC=1 compiles are built
instrumented, trained on the server's own hot path (:data:`TRAINING`), and built again with GCC's profile of that
run (``-fprofile-use``). The profile puts the code the path runs together and makes its usual branches the straight
ones; the path is bound by fetching its code (docs/benchmarks.md, issue 16 rounds 16 and 17), which is what that
layout saves. ``GAMESDK_MYPYC_PGO=0`` builds without the profile (one compile instead of two); so does a compiler
other than GCC, or a source tree without the training's files, each said in the build's output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from setuptools.command.build_ext import build_ext

#: The training: the sans-IO call of bench_server.py's one-server path (digest and policy) and the login, each run
#: once against the instrumented modules (a few seconds). Only what they run is laid out by the profile; the rest
#: is compiled as it would be without one (``-fprofile-partial-training``).
TRAINING: tuple[tuple[str, ...], ...] = (
    ("bench/bench_proxy.py", "--calls", "2000", "--warm-up", "200", "--repeats", "1"),
    ("bench/bench_registrar.py", "--logins", "6000", "--users", "1000", "--repeats", "1"),
)
#: What the training needs from the source tree, copied beside the instrumented modules (MANIFEST.in puts them in a
#: source distribution).
TRAINING_TREE = ("gamesdk", "server", "bench", "examples")


def compiler_version(compiler: str) -> str | None:
    """What ``compiler --version`` prints, or None when it cannot be run."""
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def the_compiler(environ: Mapping[str, str]) -> str:
    """The C compiler the build runs: ``CC`` when set, else the one Python was built with."""
    configured = (environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    return configured[0] if configured else "cc"


def why_not_profiled(environ: Mapping[str, str], compiler: str, version: str | None, tree: Path) -> str | None:
    """Why this compiled build cannot be profile-guided, or None when it can."""
    if environ.get("GAMESDK_MYPYC_PGO", "1").strip().lower() in ("0", "false", "no", "off"):
        return "GAMESDK_MYPYC_PGO=0"
    if version is None:
        return f"the C compiler {compiler!r} did not answer --version"
    if "Free Software Foundation" not in version:  # clang and others: their profile flags and tools differ
        return f"the C compiler {compiler!r} is not GCC"
    missing = [part for part in TRAINING_TREE if not (tree / part).is_dir()]
    if missing:
        return f"the source tree has no {', '.join(missing)} to train on"
    return None


def train(tree: Path, runs: Sequence[Sequence[str]] = TRAINING) -> None:
    """Runs each training command in ``tree`` (a copy holding the instrumented modules) with this interpreter;
    SystemExit with the command's output when one fails: instrumented modules that cannot run the path must not
    become a build."""
    for argv in runs:
        done = subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True, text=True, check=False,
                              timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"gamesdk: the profile's training run {' '.join(argv)} failed (exit "
                             f"{done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


class ProfileGuidedBuildExt(build_ext):  # type: ignore[misc]  # setuptools ships no types here
    """``build_ext`` that builds twice around a training run when it can (see the module's docstring)."""

    def run(self) -> None:
        if not self.extensions:
            super().run()
            return
        compiler = the_compiler(os.environ)
        reason = why_not_profiled(os.environ, compiler, compiler_version(compiler), Path.cwd())
        if reason is not None:
            print(f"gamesdk: compiled build without a profile: {reason}")
            super().run()
            return
        profile = os.path.abspath(os.path.join(self.build_temp, "gamesdk-profile"))
        shutil.rmtree(profile, ignore_errors=True)
        base = [(list(ext.extra_compile_args), list(ext.extra_link_args)) for ext in self.extensions]
        chosen: object = self.compiler  # type: ignore[has-type]  # a name or None: run() makes it an object
        self._flags(base, [f"-fprofile-generate={profile}", "-fprofile-update=single"],
                    [f"-fprofile-generate={profile}"])
        self.force = True
        super().run()
        with tempfile.TemporaryDirectory(prefix="gamesdk-training-") as tree:
            self._training_tree(Path(tree))
            train(Path(tree))
        self._flags(base, [f"-fprofile-use={profile}", "-fprofile-partial-training", "-Wno-missing-profile"], [])
        self.compiler = chosen
        super().run()
        print(f"gamesdk: compiled build laid out by GCC's profile of {len(TRAINING)} training runs")

    def _flags(self, base: list[tuple[list[str], list[str]]], compile_args: list[str], link_args: list[str]) -> None:
        for ext, (compile_base, link_base) in zip(self.extensions, base, strict=True):
            ext.extra_compile_args = [*compile_base, *compile_args]
            ext.extra_link_args = [*link_base, *link_args]

    def _training_tree(self, tree: Path) -> None:
        for part in TRAINING_TREE:
            shutil.copytree(part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            shutil.copy2(built, tree.joinpath(*ext.name.split(".")[:-1], built.name))
