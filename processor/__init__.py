"""The processor: applies threshold rules to readings, keeps warning counters in Redis, emits events."""
