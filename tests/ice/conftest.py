"""Fixtures for the NAT traversal tests. ``coturn_kit.py`` and ``netns_kit.py`` beside this file hold the helpers;
pytest runs with ``--import-mode=importlib``, so this folder is put on ``sys.path`` for the tests to import them."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
for _path in (_HERE, str(Path(_HERE).parent / "sdk")):  # regions.py of the SDK tests too
    if _path not in sys.path:
        sys.path.insert(0, _path)
