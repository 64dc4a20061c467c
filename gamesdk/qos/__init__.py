"""gamesdk.qos"""
