"""Suite-wide settings."""

from hypothesis import settings

# Hypothesis' per-example deadline is a timed assertion: on a shared, loaded CI machine one slow example fails a
# property that holds (seen: 1,169 ms against the 200 ms default in tests/channel/test_untrusted_input.py). Timings
# belong in bench/, so no property test has a deadline.
settings.register_profile("gamesdk", deadline=None)
settings.load_profile("gamesdk")
