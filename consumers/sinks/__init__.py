"""Where recommendations go: the Redis key schema and its stores (Redis, in-memory)."""
