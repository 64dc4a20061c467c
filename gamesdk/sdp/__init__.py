"""gamesdk.sdp"""
