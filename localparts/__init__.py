"""localparts"""
