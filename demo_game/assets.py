"""demo_game/assets: fonts, loaded after ``pygame.init()`` (never at import time).

We look for DejaVu Sans (shipped by most Linux distributions) and fall back to the font bundled
with pygame, so the demo runs on a fresh machine without any font installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pygame

__all__ = ["Fonts", "load_fonts"]


@dataclass(frozen=True, slots=True)
class Fonts:
    small: pygame.font.Font
    medium: pygame.font.Font
    large: pygame.font.Font
    score: pygame.font.Font


def _font(names: str, size: int, *, bold: bool = False) -> pygame.font.Font:
    path = pygame.font.match_font(names, bold=bold)
    if path:
        try:
            return pygame.font.Font(path, size)
        except OSError:
            pass
    return pygame.font.Font(None, round(size * 1.3))  # the bundled font runs small


def load_fonts() -> Fonts:
    """Load the fonts; call after ``pygame.font.init()``."""
    if not pygame.font.get_init():
        pygame.font.init()
    return Fonts(
        small=_font("dejavusans,freesans,arial", 14),
        medium=_font("dejavusans,freesans,arial", 17, bold=True),
        large=_font("dejavusans,freesans,arial", 30, bold=True),
        score=_font("dejavusansmono,dejavusans,freesans", 64, bold=True),
    )
