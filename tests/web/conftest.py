"""Fixtures for the web site tests. ``web_kit.py`` beside this file holds the helpers; pytest runs with
``--import-mode=importlib``, so this folder is put on ``sys.path`` for the tests to import it by name."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
