from __future__ import annotations

import sys
from pathlib import Path

# The helpers next to the tests (pytest runs with --import-mode=importlib, which does not add this folder).
sys.path.insert(0, str(Path(__file__).parent))
