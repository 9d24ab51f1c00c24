"""Offline evaluation of the online learner against batch peers (not part of the package).

Pure protocols, no services: `stream` encodes a time-ordered view stream, `splits`
cuts it, `ranking` and `stats` score and compare, `prequential` and `temporal` run
the two protocols over any `systems.base.System`, `drift` measures recovery after a
taste drift, `suite.run_evaluation` ties them into one report and `render` writes it
as markdown and a plot.
"""
