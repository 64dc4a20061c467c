"""gamesdk.__all__ is the documented surface: every name exists, is documented in docs/sdk.md, and nothing
public is left out of it."""

from __future__ import annotations

import re
from pathlib import Path

import gamesdk

DOC = Path(__file__).resolve().parents[1] / "docs" / "sdk.md"


def test_every_exported_name_exists() -> None:
    missing = [name for name in gamesdk.__all__ if not hasattr(gamesdk, name)]
    assert not missing
    assert len(set(gamesdk.__all__)) == len(gamesdk.__all__)


def test_no_public_name_outside_all() -> None:
    public = {name for name in vars(gamesdk) if not name.startswith("_")} - {"annotations"}
    # subpackages are importable but not part of the flat surface
    modules = {"channel", "client", "config", "errors", "events", "ice", "identity", "io", "polling", "qos", "sdp", "session", "sip"}
    assert public - modules - set(gamesdk.__all__) == set()


def test_the_surface_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text))
    undocumented = sorted(set(gamesdk.__all__) - documented - {"__version__"})
    assert not undocumented, f"docs/sdk.md does not mention: {undocumented}"


def test_public_classes_have_docstrings() -> None:
    for name in gamesdk.__all__:
        obj = getattr(gamesdk, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__doc__, f"gamesdk.{name} has no docstring"
