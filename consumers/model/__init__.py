"""Pure math of the learner: id registry, embedding tables, the compiled learning step,
watched histories, sampling, top-N.

Nothing here imports Kafka or Redis; randomness comes from an explicit generator.
"""
