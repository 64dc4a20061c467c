"""The gamesdk demo game: two-player Pong over the SDK."""
