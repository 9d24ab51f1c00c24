"""Producer side of recstream: the event contract, a producer client, datasets as streams."""
