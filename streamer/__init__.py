"""Producer side of recstream: the event contract, a producer client, and event sources."""
