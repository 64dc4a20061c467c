"""gamesdk.sip"""
