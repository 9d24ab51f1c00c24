"""Offline evaluation of the online learner against batch peers.

Pure protocols, no services: `stream` encodes a time-ordered view stream, `splits`
cuts it, `metrics` and `stats` score and compare, `prequential` and `temporal` run
the two protocols over any `systems.base.System`, `drift` measures recovery after a
taste drift, and `run.run_evaluation` ties them into one report.
"""
