"""gamesdk.channel"""
