"""Where events come from: the Kafka consumer group and its in-memory stand-in."""
