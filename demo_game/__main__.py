"""``python -m demo_game``: see :mod:`demo_game.main`."""

from __future__ import annotations

import sys

from demo_game.main import main

sys.exit(main())
