"""gamesdk regional game server: registrar, location, federation proxy, policy and billing."""
