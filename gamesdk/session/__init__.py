"""gamesdk.session"""
