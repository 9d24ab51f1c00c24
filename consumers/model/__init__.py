"""Pure math of the learner: id registry, embedding tables, losses, sampling, top-N.

Nothing here imports Kafka or Redis; randomness comes from an explicit generator.
"""
