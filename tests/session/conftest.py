"""The user agent's sans-IO tests. ``agent_kit.py`` beside this file holds the in-memory network; the server
tests' kit (``tests/server/server_kit.py``) builds the real regional server nodes. pytest runs with
``--import-mode=importlib``, so both folders are put on ``sys.path`` for the tests to import the kits by name."""

from __future__ import annotations

import sys
from pathlib import Path

for _folder in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "server"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
