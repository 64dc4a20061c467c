"""gamesdk.io"""
