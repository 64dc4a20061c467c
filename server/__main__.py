"""``python -m server``: the ``gamesdk-server`` command."""

from __future__ import annotations

import sys

from server.cli import main

if __name__ == "__main__":
    sys.exit(main())
