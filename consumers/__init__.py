"""The online learner of recstream: ingest, learn, publish, measure."""
