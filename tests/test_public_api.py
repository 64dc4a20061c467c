"""The public surface (trio's export test): ``gamesdk.__all__``, ``gamesdk.events``, ``gamesdk.lowlevel`` and
``gamesdk.testing`` name exactly what they export, every name exists and is documented in docs/sdk.md, and the
names moved out of the top level still import, with a DeprecationWarning naming the new place."""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path

import pytest

import gamesdk
import gamesdk.events
import gamesdk.lowlevel
import gamesdk.testing

DOC = Path(__file__).resolve().parents[1] / "docs" / "sdk.md"
NAMESPACES = [gamesdk, gamesdk.events, gamesdk.lowlevel, gamesdk.testing]


@pytest.mark.parametrize("module", NAMESPACES, ids=lambda m: m.__name__)
def test_every_exported_name_exists_once(module: types.ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
    assert len(set(module.__all__)) == len(module.__all__)


def test_the_top_level_is_small_and_has_nothing_public_outside_all() -> None:
    assert len(gamesdk.__all__) <= 30
    public = {name for name in vars(gamesdk) if not name.startswith("_")} - {"annotations", "warnings", "Any"}
    # subpackages are importable but not part of the flat surface
    modules = {name for name, value in vars(gamesdk).items() if isinstance(value, types.ModuleType)}
    assert public - modules - set(gamesdk.__all__) == set()


def test_the_surface_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`(?:gamesdk\.(?:events|lowlevel|testing)\.)?([A-Za-z_][A-Za-z0-9_]*)", text))
    for module in NAMESPACES:
        undocumented = sorted(set(module.__all__) - documented - {"__version__"})
        assert not undocumented, f"docs/sdk.md does not mention {module.__name__}: {undocumented}"


@pytest.mark.parametrize("module", NAMESPACES, ids=lambda m: m.__name__)
def test_public_classes_have_docstrings(module: types.ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_every_event_has_one_base() -> None:
    for name in gamesdk.events.__all__:
        obj = getattr(gamesdk.events, name)
        if isinstance(obj, type) and name not in ("Agreement", "Reservation"):
            assert issubclass(obj, gamesdk.events.Event), name


@pytest.mark.parametrize("name", sorted(gamesdk._MOVED))
def test_moved_names_still_import_with_a_warning(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=re.escape(gamesdk._MOVED[name])):
        value = getattr(gamesdk, name)
    assert value is getattr(importlib.import_module(gamesdk._MOVED[name]), name)
    with pytest.raises(AttributeError):
        gamesdk.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
