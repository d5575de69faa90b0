"""Prometheus metrics of every Switchboard process: their definitions in one place (`catalog`), and how
they are served (`exposition`). The bottom layer, so any stage, adapter or service can count.
"""
