"""demo_game/states: the screens of the windowed game as State objects.

Each state has the cabbages-and-kings shape (STYLE.md principle 12): ``startup``, ``handle_event``,
``update``, ``draw``, and sets ``next`` when it is done. The flow is
:class:`~demo_game.states.lobby.ConnectingState` -> :class:`~demo_game.states.match.MatchState`
-> :class:`~demo_game.states.results.ResultsState`, or straight from connecting to results when
the session is refused.
"""

from __future__ import annotations

from demo_game.states.base import Context, State
from demo_game.states.lobby import ConnectingState
from demo_game.states.match import MatchState
from demo_game.states.results import ResultsState

__all__ = ["ConnectingState", "Context", "MatchState", "ResultsState", "State"]
