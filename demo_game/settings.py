"""demo_game/settings: constants of the demo, with their units in the names.

Nothing here touches pygame or the display, so importing it is free of side effects
(the cabbages-and-kings ``prepare.py`` counter-example in STYLE.md principle 12).
"""

from __future__ import annotations

#: Simulation rate. 60 Hz matches the ``a=gsdk-format:pong/1;tick=60`` line we offer and
#: the ``pps=60`` of the default ``a=gsdk-qos`` (one state snapshot per tick, DESIGN section 3).
TICK_HZ = 60
TICK_S = 1.0 / TICK_HZ

#: The longest frame the accumulator will catch up on. A debugger pause or a window drag must not
#: make the loop run hundreds of ticks in a row (the "spiral of death" of fixed-timestep loops).
MAX_FRAME_S = 0.25

#: Frames per second the windowed runner aims for (``pygame.time.Clock.tick``).
WINDOW_FPS = 60

#: Window and layout, in pixels. The HUD is a band under the field.
WINDOW_W_PX = 960
WINDOW_H_PX = 600
HUD_H_PX = 120
FIELD_TOP_PX = 0
FIELD_H_PX = WINDOW_H_PX - HUD_H_PX

#: How far behind the newest snapshot the guest renders. Three ticks at 60 Hz absorb one lost
#: snapshot plus a few ms of jitter; Valve's Source engine uses 100 ms at 20 Hz (2 snapshots) for the same reason.
INTERP_DELAY_S = 3 * TICK_S

#: Snapshots the guest keeps for interpolation (one second at 60 Hz is far more than needed).
SNAPSHOT_BUFFER_LEN = 60

#: Guest inputs the host holds before it skips ahead (four ticks, 67 ms at 60 Hz): a burst of
#: late inputs must not keep the guest's paddle behind for the rest of the match.
MAX_INPUT_BACKLOG = 4

#: Inputs are quantised to 1/INPUT_STEPS of full speed; fewer distinct values means fewer messages.
INPUT_STEPS = 8

#: Seconds the results screen stays up before the windowed runner exits on its own.
RESULTS_LINGER_S = 30.0

#: Headless runner: seconds between two printed channel-stats lines.
STATS_EVERY_S = 1.0

#: How long a side that ends the match keeps the session up after its end message, so the
#: reliable lane can deliver (and if need be resend) it before the BYE: several round trips.
CLOSE_LINGER_S = 0.5

#: After the host ends the match, how long the runner keeps polling so the guest gets the end message.
END_GRACE_S = 2.0

#: Colours (RGB).
COLOUR_BG = (14, 18, 30)
COLOUR_FIELD = (20, 27, 44)
COLOUR_NET = (70, 84, 120)
COLOUR_PADDLE_HOST = (90, 200, 255)
COLOUR_PADDLE_GUEST = (255, 170, 70)
COLOUR_BALL = (250, 250, 250)
COLOUR_HUD_BG = (8, 10, 18)
COLOUR_HUD_LINE = (60, 72, 104)
COLOUR_TEXT = (220, 226, 240)
COLOUR_TEXT_DIM = (140, 150, 175)
COLOUR_OK = (110, 220, 130)
COLOUR_WARN = (255, 200, 80)
COLOUR_BAD = (255, 90, 90)
