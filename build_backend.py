"""The package's build backend: setuptools, plus mypy (mypyc) and the runtime dependencies in the build
environment when ``GAMESDK_MYPYC=1`` asks for the compiled build (setup.py), so that mypyc type-checks the code
against the same libraries as ``mypy --strict`` does. Without the switch it is plain setuptools."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - the hooks this backend passes through unchanged
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

_MYPY = "mypy>=1.10"


def _compiled_extras() -> list[str]:
    if os.environ.get("GAMESDK_MYPYC", "").strip().lower() not in ("1", "true", "yes", "on"):
        return []
    project = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())["project"]
    return [_MYPY, *project.get("dependencies", [])]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*_setuptools.get_requires_for_build_wheel(config_settings), *_compiled_extras()]


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*_setuptools.get_requires_for_build_editable(config_settings), *_compiled_extras()]
