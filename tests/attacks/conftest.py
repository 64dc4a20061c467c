"""Fixtures for the attack tests: a real ``python -m server run`` process on loopback, attacked over UDP.

``attack_kit.py`` beside this file holds the helpers (raw-socket spoofing, a socket player, a victim socket that
counts what reaches it). The SIPp harness's ``RegionServer`` starts the server; both are loaded by path (pytest
runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
for folder in (_HERE, _HERE.parent / "server"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_load("gamesdk_sipp_harness", _HERE.parent / "server" / "sipp" / "harness.py")
