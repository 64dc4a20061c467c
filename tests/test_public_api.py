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


def documented_identifiers() -> set[str]:
    """Every identifier inside a `code span` of docs/sdk.md (``session.send(data, lane)`` gives four)."""
    text = DOC.read_text(encoding="utf-8")
    spans = re.findall(r"`([^`\n]+)`", text) + re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    return {name for span in spans for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}


def instance_attributes(cls: type) -> set[str]:
    """Public attributes ``__init__`` sets on ``self``."""
    import ast
    import inspect
    import textwrap

    try:
        source = textwrap.dedent(inspect.getsource(cls.__init__))
    except (OSError, TypeError):
        return set()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
                and isinstance(node.ctx, ast.Store) and not node.attr.startswith("_"):
            names.add(node.attr)
    return names


def developer_facing(module: types.ModuleType) -> list[tuple[str, str]]:
    import dataclasses
    import enum

    out = []
    for name in module.__all__:
        cls = getattr(module, name)
        if not isinstance(cls, type):
            continue
        if dataclasses.is_dataclass(cls):
            attrs = {f.name for f in dataclasses.fields(cls)}
        elif issubclass(cls, enum.Enum):
            attrs = set(cls.__members__)
        else:
            own = {n for klass in cls.__mro__ if klass.__module__.startswith("gamesdk") for n in vars(klass)}
            attrs = {n for n in own if not n.startswith("_")} | instance_attributes(cls)
            for klass in cls.__mro__[1:]:
                if klass.__module__.startswith("gamesdk"):
                    attrs |= instance_attributes(klass)
        out += [(name, attr) for attr in sorted(attrs)]
    return out


@pytest.mark.parametrize("module", [gamesdk, gamesdk.events], ids=lambda m: m.__name__)
def test_every_method_attribute_and_field_a_developer_touches_is_documented(module: types.ModuleType) -> None:
    documented = documented_identifiers()
    missing = [f"{name}.{attr}" for name, attr in developer_facing(module) if attr not in documented]
    assert not missing, f"docs/sdk.md does not mention: {missing}"
